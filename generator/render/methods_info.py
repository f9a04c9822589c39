"""What each method page says: formula (LaTeX, shown as MathML) and how to read it.

Kept next to the renderer so pages can be rebuilt without torch; the method's own docstring
(stored in each artifact) adds its paper and known limits.
"""

from __future__ import annotations

from typing import Dict

METHOD_INFO: Dict[str, Dict[str, str]] = {
    "saliency": {
        "title": "Gradient saliency",
        "formula": r"M_{ij} = \max_{c} \left| \frac{\partial f_t(x)}{\partial x_{cij}} \right|",
        "read": "Bright pixels are those where a small change would change the class score most. "
                "It measures sensitivity, not contribution, and is often noisy.",
    },
    "gradient_x_input": {
        "title": "Gradient x input",
        "formula": r"M_{ij} = \sum_c x_{cij} \frac{\partial f_t(x)}{\partial x_{cij}}",
        "read": "Red pixels push the score up, blue pixels push it down (a first-order contribution).",
    },
    "smoothgrad": {
        "title": "SmoothGrad",
        "formula": r"M = \frac{1}{n} \sum_{k=1}^{n} \nabla_x f_t(x + \epsilon_k),\ \epsilon_k \sim \mathcal{N}(0, \sigma^2)",
        "read": "Gradients averaged over noisy copies of the image: less speckle than plain saliency.",
    },
    "integrated_gradients": {
        "title": "Integrated gradients",
        "formula": r"M_i = (x_i - x'_i) \int_0^1 \frac{\partial f_t(x' + \alpha (x - x'))}{\partial x_i} d\alpha",
        "read": "Contributions that add up to the score difference between the image and the baseline "
                "(completeness); red supports the class, blue opposes it.",
    },
    "gradcam": {
        "title": "Grad-CAM",
        "formula": r"L^t = \mathrm{ReLU}\left( \sum_k \alpha_k^t A^k \right),\ \alpha_k^t = \frac{1}{Z} \sum_{ij} \frac{\partial f_t}{\partial A^k_{ij}}",
        "read": "Regions of the last convolutional layer that support the class, upsampled to the image: "
                "coarse but class-discriminative.",
    },
    "smoothgrad_sq": {
        "title": "SmoothGrad squared",
        "formula": r"M = \frac{1}{n} \sum_{k=1}^{n} \left( \nabla_x f_t(x + \epsilon_k) \right)^2",
        "read": "Mean of squared gradients over noisy copies: unsigned, dominated by the largest gradients; "
                "among the few variants that beat a random ranking under ROAR.",
    },
    "vargrad": {
        "title": "VarGrad",
        "formula": r"M = \frac{1}{n} \sum_{k=1}^{n} \left( \nabla_x f_t(x + \epsilon_k) - \bar g \right)^2",
        "read": "Variance of the gradient under input noise: bright where the gradient is unstable. "
                "Unsigned; it can reflect the noise model more than the class evidence.",
    },
    "interior_gradients": {
        "title": "Interior gradients",
        "formula": r"M^{(\alpha)} = (x - x') \odot \nabla_x f_t(x' + \alpha (x - x')),\ \alpha \in (0, 1]",
        "read": "One map per scaling alpha of the image towards the baseline: small alphas show features "
                "that the gradient at the full image misses because the score has saturated.",
    },
    "deconvnet": {
        "title": "Deconvnet",
        "formula": r"R^{(l)} = \mathrm{ReLU}\left(R^{(l+1)}\right),\ M_{ij} = \max_c |R^{(0)}_{cij}|",
        "read": "Bright pixels are image structures that excite the network's units; the map hardly "
                "depends on the class, so read it as 'what the network sees', not 'why this class'.",
    },
    "guided_backprop": {
        "title": "Guided backpropagation",
        "formula": r"R^{(l)} = \mathbb{1}[a^{(l)} > 0] \, \mathrm{ReLU}\left(R^{(l+1)}\right),\ M_{ij} = \max_c |R^{(0)}_{cij}|",
        "read": "Sharp, edge-like maps of positive evidence. They largely reconstruct the image and change "
                "little with the class or the weights (see the sanity check).",
    },
    "gradcam_pp": {
        "title": "Grad-CAM++",
        "formula": r"L^t = \mathrm{ReLU}\left(\sum_k w_k^t A^k\right),\ w_k^t = \sum_{ij} \alpha^{kt}_{ij} \mathrm{ReLU}\left(\frac{\partial f_t}{\partial A^k_{ij}}\right)",
        "read": "Like Grad-CAM, but pixel-wise weights give several instances of the class more equal credit; "
                "equally coarse.",
    },
    "guided_gradcam": {
        "title": "Guided Grad-CAM",
        "formula": r"M = \max_c \left| R_{\mathrm{guided}} \right| \odot \mathrm{up}\left(L^t\right)",
        "read": "Guided backprop detail restricted to the Grad-CAM region: fine edges of the class region. "
                "It inherits guided backprop's weak dependence on the weights.",
    },
    "counterfactual_gradcam": {
        "title": "Counterfactual Grad-CAM",
        "formula": r"L^{t,-} = \mathrm{ReLU}\left( \sum_k \alpha_k^{t,-} A^k \right),\ \alpha_k^{t,-} = -\frac{1}{Z} \sum_{ij} \frac{\partial f_t}{\partial A^k_{ij}}",
        "read": "Regions that argue against the class: removing them would (to first order) raise its score. "
                "An empty map means nothing in the layer's features speaks against the class.",
    },
    "lrp_epsilon": {
        "title": "LRP-epsilon",
        "formula": r"R_i = \sum_j \frac{a_i w_{ij}}{\epsilon + \sum_{i'} a_{i'} w_{i'j} + b_j} R_j",
        "read": "Relevance of each pixel for the class score, redistributed layer by layer; red supports, "
                "blue opposes. Biases (including folded BatchNorm) absorb part of the relevance, so the "
                "total differs from the score: the conservation ratio is reported.",
    },
    "lrp_alpha_beta": {
        "title": "LRP-alpha-beta",
        "formula": r"R_i = \sum_j \left( \alpha \frac{(a_i w_{ij})^+}{\sum_{i'} (a_{i'} w_{i'j})^+} - \beta \frac{(a_i w_{ij})^-}{\sum_{i'} (a_{i'} w_{i'j})^-} \right) R_j",
        "read": "Positive and negative evidence weighted separately (alpha = 2, beta = 1): sparse maps with "
                "a red core and a blue fringe.",
    },
    "lrp_zplus_flat": {
        "title": "LRP epsilon-z+-flat",
        "formula": r"R_i = \sum_j \frac{(a_i w_{ij})^+}{\sum_{i'} (a_{i'} w_{i'j})^+} R_j",
        "read": "z+ in the convolutions, epsilon in dense layers, flat in the first layer: only positive "
                "evidence passes the convolutions, giving a smooth, mostly positive map; less class-specific.",
    },
    "deeplift": {
        "title": "DeepLIFT (rescale)",
        "formula": r"M_i = (x_i - x'_i)\, m_i,\ \ m = \nabla_x f_t \text{ with } \frac{\Delta y}{\Delta z} \text{ for } \frac{\partial y}{\partial z} \text{ at each nonlinearity}",
        "read": "Contributions relative to the reference image that sum to the score difference "
                "(summation to delta); red supports the class, blue opposes it.",
    },
    "occlusion": {
        "title": "Occlusion",
        "formula": r"M_{ij} = \frac{1}{|W_{ij}|} \sum_{w \in W_{ij}} \left( f_t(x) - f_t(x_{w \leftarrow b}) \right)",
        "read": "How much the class score drops when a window covering the pixel is replaced by the "
                "baseline: red windows matter for the class, blue ones hide evidence against it. "
                "Resolution is the stride.",
    },
}


def info(method: str) -> Dict[str, str]:
    return METHOD_INFO.get(method, {"title": method.replace("_", " ").capitalize(), "formula": "", "read": ""})
