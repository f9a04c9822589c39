"""Catalogue entries of the attribution methods ("why this image got this label").

The classes in :mod:`generator.methods.attribution` read their ``version``, ``defaults`` and
``common_defaults`` from here, the config validator checks ``outcome.params`` and
``evaluation.params`` against the typed parameters, and the outcome pages show the title,
formula, reading guide, limits and extra columns. Torch-free.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from generator.catalogue.types import MethodEntry, Param

FAMILY = "attribution"

#: Parameters every attribution method takes. ``max_batch`` is part of the effective
#: parameters (and so of artifact keys) because chunking changes the order of floating-point
#: sums on a GPU, and artifacts are byte-deterministic.
COMMON: Tuple[Param, ...] = (
    Param("max_batch", "int", 64, "items per forward/backward pass; chunks are halved on out-of-memory", minimum=1),
    Param("precision", "str", "fp32", "fp32, or bf16 autocast (GPU)", choices=("fp32", "bf16")),
)

#: Per-image numbers some methods report, shown as table columns: key -> (label, help).
#: The order here is the order of the columns on every page.
COLUMNS: Dict[str, Tuple[str, str]] = {
    "delta": ("f(x) − f(baseline)", "the score difference the attributions should add up to"),
    "completeness_gap": ("completeness gap", "|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|"),
    "target_logit": ("target logit", "the score LRP starts from"),
    "relevance_sum": ("Σ relevance", "relevance that reaches the input pixels"),
    "conservation": ("conservation", "Σ relevance / target logit; 1 = conserved, biases absorb the rest"),
}

BASELINES = ("black", "zeros", "blur", "uniform")


def _baseline(default: str) -> Param:
    return Param("baseline", "str", default,
                 "reference image: black (pixel 0), zeros (zero model input), blur (Gaussian blur of the input), "
                 "uniform (seeded noise), or a constant model input", choices=BASELINES, or_number=True)


BLUR_SIGMA = Param("blur_sigma", "float", 10.0, "standard deviation (px) of the blur baseline", minimum=0)
SEED = Param("seed", "int", 0, "seed of random baselines and noise", minimum=0)
NOISE = (
    Param("n_samples", "int", 50, "noisy copies of each image", minimum=1),
    Param("noise_level", "float", 0.15, "noise standard deviation as a fraction of each image's value range",
          minimum=0),
    SEED,
)
LAYER = Param("layer", "str", None, "layer whose feature maps are weighted (default: the model's cam_layer)",
              nullable=True)
LRP = (
    Param("epsilon", "float", 1e-6, "stabiliser added to every denominator", minimum=0),
    Param("canonize", "bool", True, "fold BatchNorm into the preceding layer and make skip connections explicit"),
)
SMOOTHGRAD_CITATION = 'Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"'
GRADCAM_CITATION = ('Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based '
                    'Localization"')
#: What every LRP composite says about where its rules stop.
LRP_HONEST = (" A map whose relevance (plus what the biases absorb) leaves 0.9-1.1 of the logit, or that "
              "holds a NaN, is marked unreliable with the reason; a model with operations no rule covers "
              "(softmax attention, LayerNorm, TorchScript) is listed as not applicable.")
LRP_CITATION = ('Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise '
                'Relevance Propagation"')


def _entry(**fields: Any) -> MethodEntry:
    return MethodEntry(family=FAMILY, common=COMMON, **fields)


ENTRIES: Tuple[MethodEntry, ...] = (
    _entry(
        name="saliency", title="Gradient saliency",
        summary="the gradient of the class score with respect to the input pixels (unsigned)",
        citation='Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks: Visualising Image '
                 'Classification Models and Saliency Maps"',
        formula=r"M_{ij} = \max_{c} \left| \frac{\partial f_t(x)}{\partial x_{cij}} \right|",
        read="Bright pixels are those where a small change would change the class score most. "
             "It measures sensitivity, not contribution, and is often noisy.",
        limits="A local, first-order explanation: it says which pixels would change the score most if nudged, "
               "not which ones the score relies on, and it is visually noisy (shattered gradients).",
    ),
    _entry(
        name="gradient_x_input", title="Gradient x input",
        summary="the gradient multiplied elementwise by the model input (signed)",
        citation='Shrikumar et al. 2016, "Not Just a Black Box: Learning Important Features Through Propagating '
                 'Activation Differences"',
        formula=r"M_{ij} = \sum_c x_{cij} \frac{\partial f_t(x)}{\partial x_{cij}}",
        read="Red pixels push the score up, blue pixels push it down (a first-order contribution).",
        limits="Equals a one-step integrated gradient from a zero model input (the dataset mean colour after "
               "normalisation) and inherits the noise of the gradient.",
    ),
    _entry(
        name="smoothgrad", title="SmoothGrad",
        summary="the gradient averaged over noisy copies of the input",
        citation=SMOOTHGRAD_CITATION,
        formula=r"M = \frac{1}{n} \sum_{k=1}^{n} \nabla_x f_t(x + \epsilon_k),\ \epsilon_k \sim \mathcal{N}(0, "
                r"\sigma^2)",
        read="Gradients averaged over noisy copies of the image: less speckle than plain saliency.",
        limits="The result depends on the noise level and sample count, and sharper maps are not proof of "
               "higher faithfulness.",
        params=NOISE,
    ),
    _entry(
        name="smoothgrad_sq", title="SmoothGrad squared",
        summary="the mean of squared gradients over noisy copies of the input",
        citation=f'Hooker et al. 2019, "A Benchmark for Interpretability Methods in Deep Neural Networks"; '
                 f'{SMOOTHGRAD_CITATION}',
        formula=r"M = \frac{1}{n} \sum_{k=1}^{n} \left( \nabla_x f_t(x + \epsilon_k) \right)^2",
        read="Mean of squared gradients over noisy copies: unsigned, dominated by the largest gradients; "
             "among the few variants that beat a random ranking under ROAR.",
        limits="It discards the sign and emphasises large gradients; it shares SmoothGrad's dependence on the "
               "noise level.",
        params=NOISE,
    ),
    _entry(
        name="vargrad", title="VarGrad",
        summary="the variance of gradients over noisy copies of the input",
        citation='Adebayo et al. 2018, "Local explanation methods for deep neural networks lack sensitivity to '
                 'parameter values"',
        formula=r"M = \frac{1}{n} \sum_{k=1}^{n} \left( \nabla_x f_t(x + \epsilon_k) - \bar g \right)^2",
        read="Variance of the gradient under input noise: bright where the gradient is unstable. "
             "Unsigned; it can reflect the noise model more than the class evidence.",
        limits="Unsigned; the variance can be dominated by the noise model rather than the class evidence.",
        params=NOISE,
    ),
    _entry(
        name="interior_gradients", title="Interior gradients",
        summary="gradients at inputs scaled towards a baseline, for a sweep of alphas",
        citation='Sundararajan, Taly & Yan 2016, "Gradients of Counterfactuals"',
        formula=r"M^{(\alpha)} = (x - x') \odot \nabla_x f_t(x' + \alpha (x - x')),\ \alpha \in (0, 1]",
        read="One map per scaling alpha of the image towards the baseline: small alphas show features "
             "that the gradient at the full image misses because the score has saturated.",
        limits="Each map is one counterfactual, not an explanation by itself, and the choice of alpha and "
               "baseline is arbitrary.",
        params=(
            Param("alphas", "floats", (0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
                  "scalings of the sweep", minimum=0, open_minimum=True, maximum=1),
            Param("alpha", "float", 0.2, "the scaling shown as the map (the nearest of alphas)",
                  minimum=0, open_minimum=True, maximum=1),
            _baseline("black"), BLUR_SIGMA, SEED,
        ),
    ),
    _entry(
        name="integrated_gradients", version="2", title="Integrated gradients",
        summary="(x - baseline) times the gradient averaged along the straight path",
        citation='Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"',
        formula=r"M_i = (x_i - x'_i) \int_0^1 \frac{\partial f_t(x' + \alpha (x - x'))}{\partial x_i} d\alpha",
        read="Contributions that add up to the score difference between the image and the baseline "
             "(completeness); red supports the class, blue opposes it.",
        limits="Completeness holds up to the discretisation of the path (the gap is reported; a map that misses "
               "f(x) − f(baseline) by more than 5 % is marked unreliable), but the result depends strongly on the "
               "baseline "
               "(a black baseline cannot credit black pixels) and the path.",
        params=(
            Param("steps", "int", 50, "points on the path", minimum=2),
            _baseline("black"),
            Param("integration", "str", "gausslegendre", "quadrature rule of the path integral",
                  choices=("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")),
            BLUR_SIGMA, SEED,
        ),
        columns=("delta", "completeness_gap"),
    ),
    _entry(
        name="deconvnet", version="2", title="Deconvnet",
        summary="the backward pass with every ReLU applied to the backward signal",
        citation='Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"',
        formula=r"R^{(l)} = \mathrm{ReLU}\left(R^{(l+1)}\right),\ M_{ij} = \max_c |R^{(0)}_{cij}|",
        read="Bright pixels are image structures that excite the network's units; the map hardly "
             "depends on the class, so read it as 'what the network sees', not 'why this class'.",
        limits="Largely class-insensitive and mostly shows image structure. Defined for ReLU networks only: "
               "every ReLU gets the rule (modules and function calls); a network with other activations "
               "(GELU, SiLU, gates) or a TorchScript model is listed as not applicable.",
    ),
    _entry(
        name="guided_backprop", version="2", title="Guided backpropagation",
        summary="the gradient with negative signals stopped at every ReLU",
        citation='Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net"',
        formula=r"R^{(l)} = \mathbb{1}[a^{(l)} > 0] \, \mathrm{ReLU}\left(R^{(l+1)}\right),\ M_{ij} = \max_c "
                r"|R^{(0)}_{cij}|",
        read="Sharp, edge-like maps of positive evidence. They largely reconstruct the image and change "
             "little with the class or the weights (see the sanity check).",
        limits="The maps largely reconstruct the image (edges) and barely change with the class or the weights "
               "(Adebayo et al. 2018; Nie et al. 2018). Defined for ReLU networks only: a network with other "
               "activations (GELU, SiLU, gates) or a TorchScript model is listed as not applicable.",
    ),
    _entry(
        name="gradcam", title="Grad-CAM",
        summary="a layer's feature maps weighted by their spatially averaged gradients, ReLU",
        citation=GRADCAM_CITATION,
        formula=r"L^t = \mathrm{ReLU}\left( \sum_k \alpha_k^t A^k \right),\ \alpha_k^t = \frac{1}{Z} \sum_{ij} "
                r"\frac{\partial f_t}{\partial A^k_{ij}}",
        read="Regions of the last convolutional layer that support the class, upsampled to the image: "
             "coarse but class-discriminative.",
        limits="Its resolution is that of the chosen layer (7x7 for ResNets at 224 px), so it localises "
               "coarsely, and averaging gradients can under-weight small or repeated objects.",
        params=(LAYER,),
    ),
    _entry(
        name="gradcam_pp", title="Grad-CAM++",
        summary="feature maps weighted by positive gradients with pixel-wise coefficients",
        citation='Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep Convolutional '
                 'Networks"',
        formula=r"L^t = \mathrm{ReLU}\left(\sum_k w_k^t A^k\right),\ w_k^t = \sum_{ij} \alpha^{kt}_{ij} "
                r"\mathrm{ReLU}\left(\frac{\partial f_t}{\partial A^k_{ij}}\right)",
        read="Like Grad-CAM, but pixel-wise weights give several instances of the class more equal credit; "
             "equally coarse.",
        limits="The closed-form weights assume an exponential of the score; they cover several instances "
               "better than Grad-CAM but inherit its coarse resolution.",
        params=(LAYER,),
    ),
    _entry(
        name="guided_gradcam", version="2", title="Guided Grad-CAM",
        summary="guided backpropagation multiplied by the upsampled Grad-CAM",
        citation=GRADCAM_CITATION,
        formula=r"M = \max_c \left| R_{\mathrm{guided}} \right| \odot \mathrm{up}\left(L^t\right)",
        read="Guided backprop detail restricted to the Grad-CAM region: fine edges of the class region. "
             "It inherits guided backprop's weak dependence on the weights.",
        limits="Inherits guided backprop's insensitivity to the model's weights (Adebayo et al. 2018).",
        params=(LAYER,),
    ),
    _entry(
        name="counterfactual_gradcam", title="Counterfactual Grad-CAM",
        summary="Grad-CAM with negated gradients: what argues against the class",
        citation=f"{GRADCAM_CITATION}, section on counterfactual explanations",
        formula=r"L^{t,-} = \mathrm{ReLU}\left( \sum_k \alpha_k^{t,-} A^k \right),\ \alpha_k^{t,-} = -\frac{1}{Z} "
                r"\sum_{ij} \frac{\partial f_t}{\partial A^k_{ij}}",
        read="Regions that argue against the class: removing them would (to first order) raise its score. "
             "An empty map means nothing in the layer's features speaks against the class.",
        limits="A first-order statement about the layer's features, so \"removal\" is only an approximation; "
               "it shares Grad-CAM's coarse resolution.",
        params=(LAYER,),
    ),
    _entry(
        name="lrp_epsilon", version="2", title="LRP-epsilon",
        summary="relevance redistributed in proportion to each input's contribution, in every layer",
        citation=LRP_CITATION,
        formula=r"R_i = \sum_j \frac{a_i w_{ij}}{\epsilon + \sum_{i'} a_{i'} w_{i'j} + b_j} R_j",
        read="Relevance of each pixel for the class score, redistributed layer by layer; red supports, "
             "blue opposes. Biases (including folded BatchNorm) absorb part of the relevance, so the "
             "total differs from the score: the conservation ratio is reported.",
        limits="With a tiny epsilon it equals gradient x input on ReLU networks and is as noisy; biases absorb "
               "part of the relevance." + LRP_HONEST,
        params=LRP,
        columns=("target_logit", "relevance_sum", "conservation"),
    ),
    _entry(
        name="lrp_alpha_beta", version="2", title="LRP-alpha-beta",
        summary="alpha-beta rule on convolutions, epsilon on dense layers, flat on the first layer",
        citation=f'{LRP_CITATION}; Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview"',
        formula=r"R_i = \sum_j \left( \alpha \frac{(a_i w_{ij})^+}{\sum_{i'} (a_{i'} w_{i'j})^+} - \beta \frac{(a_i "
                r"w_{ij})^-}{\sum_{i'} (a_{i'} w_{i'j})^-} \right) R_j",
        read="Positive and negative evidence weighted separately (alpha = 2, beta = 1): sparse maps with "
             "a red core and a blue fringe.",
        limits="The choice of alpha is arbitrary and biases are ignored in the convolutions." + LRP_HONEST,
        params=LRP + (Param("alpha", "float", 2.0, "weight of positive contributions", minimum=0),
                      Param("beta", "float", 1.0, "weight of negative contributions", minimum=0)),
        columns=("target_logit", "relevance_sum", "conservation"),
    ),
    _entry(
        name="lrp_zplus_flat", version="2", title="LRP epsilon-z+-flat",
        summary="z-plus on convolutions, epsilon on dense layers, flat on the first layer",
        citation='Kohlbrenner et al. 2020, "Towards Best Practice in Explaining Neural Network Decisions with LRP"',
        formula=r"R_i = \sum_j \frac{(a_i w_{ij})^+}{\sum_{i'} (a_{i'} w_{i'j})^+} R_j",
        read="z+ in the convolutions, epsilon in dense layers, flat in the first layer: only positive "
             "evidence passes the convolutions, giving a smooth, mostly positive map; less class-specific.",
        limits="Only positive evidence is propagated through the convolutions, so the map tends to be less "
               "class-specific; biases are ignored in them." + LRP_HONEST,
        params=LRP,
        columns=("target_logit", "relevance_sum", "conservation"),
    ),
    _entry(
        name="deeplift", version="2", title="DeepLIFT (rescale)",
        summary="(x - reference) times multipliers from each nonlinearity's secant slope",
        citation='Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through Propagating '
                 'Activation Differences"',
        formula=r"M_i = (x_i - x'_i)\, m_i,\ \ m = \nabla_x f_t \text{ with } \frac{\Delta y}{\Delta z} \text{ for } "
                r"\frac{\partial y}{\partial z} \text{ at each nonlinearity}",
        read="Contributions relative to the reference image that sum to the score difference "
             "(summation to delta); red supports the class, blue opposes it.",
        limits="Summation-to-delta holds for networks of linear layers and elementwise activations, modules or "
               "function calls (the gap is reported); max-pooling passes the ordinary gradient here, and the "
               "result depends on the reference. Networks with normalisation layers, softmax, attention or "
               "gates, and TorchScript models, are listed as not applicable.",
        params=(_baseline("black"), BLUR_SIGMA, SEED),
        columns=("delta", "completeness_gap"),
    ),
    _entry(
        name="occlusion", title="Occlusion",
        summary="the drop of the class score when a sliding window is replaced by a baseline",
        citation='Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"',
        formula=r"M_{ij} = \frac{1}{|W_{ij}|} \sum_{w \in W_{ij}} \left( f_t(x) - f_t(x_{w \leftarrow b}) \right)",
        read="How much the class score drops when a window covering the pixel is replaced by the "
             "baseline: red windows matter for the class, blue ones hide evidence against it. "
             "Resolution is the stride.",
        limits="Costly (one forward per window), its resolution is the stride, and the baseline patch itself "
               "can create out-of-distribution evidence. On a vision transformer the windows are its patches "
               "(align: patch), so the map's resolution is the patch grid.",
        params=(
            Param("window", "pixels", 16, "window side"),
            Param("stride", "pixels", 8, "step between windows"),
            Param("align", "str", "patch", "on a model with a token grid (ViT, Swin), 'patch' makes window and "
                  "stride one patch, so each window hides whole patches; 'none' uses window and stride as given. "
                  "No effect on a CNN", choices=("patch", "none")),
            _baseline("zeros"),
            Param("output", "str", "logit", "score whose drop is recorded", choices=("logit", "probability")),
            # forward passes only: larger chunks than the gradient methods fit in memory
            Param("max_batch", "int", 256, "windowed images per forward pass", minimum=1),
        ),
    ),
)
