"""Catalogue entries of the families whose methods are configured by a section rather than by
``params``: evaluation checks, the data dimension, feature visualisation and Building Blocks.

Their settings are typed by the section's pydantic model (``section`` names it), so these
entries carry what the pages and ``modelcard list methods`` say: title, one-line summary,
paper, formula, how to read, limits. Torch-free.
"""

from __future__ import annotations

from typing import Tuple

from generator.catalogue.types import MethodEntry

OLAH_2017 = 'Olah, Mordvintsev & Schubert 2017, "Feature Visualization" (Distill)'
OLAH_2018 = 'Olah et al. 2018, "The Building Blocks of Interpretability" (Distill)'
ZEILER_2014 = 'Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"'

EVALUATION: Tuple[MethodEntry, ...] = (
    MethodEntry(
        name="selectivity", family="evaluation", title="Deletion and insertion (selectivity)",
        summary="remove or reveal pixels in order of attribution and follow the class score",
        citation='Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of Black-box '
                 'Models"; Samek et al. 2017, "Evaluating the Visualization of What a Deep Neural Network Has '
                 'Learned"',
        formula=r"\mathrm{AUC}_{\mathrm{del}} = \int_0^1 f_t\big(x_{\setminus \mathrm{top}(q)}\big)\,dq",
        read="A faithful map makes the deletion curve fall fast (low AUC) and the insertion curve rise fast "
             "(high AUC).",
        limits="Removed pixels create images outside the training distribution, so part of the drop measures "
               "surprise rather than lost evidence; the baseline (zeros, blur, mean) changes the ranking.",
        section="evaluation.selectivity",
    ),
    MethodEntry(
        name="sensitivity", family="evaluation", title="Class sensitivity",
        summary="maps for the top-1, the runner-up and a random class: does the map change with the class?",
        citation='Nie, Zhang & Patel 2018, "A Theoretical Explanation for Perplexing Behaviors of '
                 'Backpropagation-based Visualizations"',
        formula=r"\rho = \mathrm{Spearman}\big(M_{t_1}(x), M_{t_2}(x)\big)",
        read="A high rank correlation between the maps of different classes means the method does not explain "
             "the class, only the image.",
        limits="Two classes can legitimately rely on the same region (a dog and a cat in one photo do not).",
        section="evaluation.sensitivity",
    ),
    MethodEntry(
        name="sanity", family="evaluation", title="Model-randomisation sanity check",
        summary="randomise layers from the top down and measure how similar the maps stay",
        citation='Adebayo et al. 2018, "Sanity Checks for Saliency Maps"',
        formula=r"\rho_k = \mathrm{Spearman}\big(|M(x; \theta)|, |M(x; \theta_{\mathrm{rand}\ 1..k})|\big)",
        read="A method whose maps survive full randomisation does not explain the model.",
        limits="Similarity measures (rank correlation, SSIM) disagree on partial changes; the threshold is a "
               "setting, not a law.",
        section="evaluation.sanity",
    ),
    MethodEntry(
        name="roar", family="evaluation", title="ROAR / KAR",
        summary="remove (or keep) the top pixels by each method, retrain, and measure test accuracy",
        citation='Hooker et al. 2019, "A Benchmark for Interpretability Methods in Deep Neural Networks"',
        read="A useful method degrades accuracy faster than a random ranking under ROAR and keeps more of it "
             "under KAR.",
        limits="Retraining is costly, so the budget here is reduced (a subset, few epochs); only models whose "
               "training can be repeated here are evaluated.",
        section="evaluation.roar",
    ),
    MethodEntry(
        name="localisation", family="evaluation", title="Localisation (pointing game, energy in mask)",
        summary="does the map's peak, and how much of its energy, fall inside the object's mask?",
        citation='Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop"; Wang et al. 2020, '
                 '"Score-CAM"',
        read="A hit means the map's maximum lies within the tolerance of the object mask.",
        limits="Only for datasets with masks or boxes; a model may rightly use context outside the object.",
        section="evaluation.localisation",
    ),
    MethodEntry(
        name="segmentation", family="evaluation", title="CAM threshold segmentation",
        summary="masks and boxes from a CAM thresholded at fractions of its maximum",
        citation='Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based '
                 'Localization"',
        read="The box of each threshold is the weakly supervised localisation of the class.",
        limits="As coarse as the CAM layer; the best threshold depends on the model.",
        section="evaluation.segmentation",
    ),
)

DATA: Tuple[MethodEntry, ...] = (
    MethodEntry(
        name="mmd_critic", family="data", title="Prototypes and criticisms (MMD-critic)",
        summary="prototypes that match the data's distribution, and criticisms where they fail",
        citation='Kim, Khanna & Koyejo 2016, "Examples are not Enough, Learn to Criticize! Criticism for '
                 'Interpretability"',
        formula=r"\mathrm{MMD}^2(X,S)=\frac{1}{n^2}\sum_{i,j=1}^{n}k(x_i,x_j)-\frac{2}{nm}\sum_{i=1}^{n}\sum_{j\in "
                r"S}k(x_i,x_j)"
                r"+\frac{1}{m^2}\sum_{i,j\in S}k(x_i,x_j)",
        read="Prototypes are typical examples of a class; criticisms are examples the prototypes represent "
             "badly (rare poses, odd items, label noise).",
        limits="Depends on the space (embedding or pixels) and the kernel width; the greedy selection is not "
               "globally optimal.",
        section="data.prototypes",
    ),
    MethodEntry(
        name="tracin", family="data", title="TracIn",
        summary="training examples whose gradient steps lowered (or raised) a test example's loss",
        citation='Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent"',
        formula=r"\mathrm{TracIn}(z,z')=\sum_{k}\eta_k\,\nabla_\theta\ell(z;\theta_k)\cdot\nabla_\theta\ell(z';\theta_k)",
        read="Positive scores mark proponents (they helped), negative ones opponents (they hurt).",
        limits="Restricted to the saved checkpoints and, by default, the last layer's parameters.",
        section="data.influence",
    ),
    MethodEntry(
        name="influence_functions", family="data", title="Influence functions (last layer)",
        summary="the change in test loss when a training example is up-weighted",
        citation='Koh & Liang 2017, "Understanding Black-box Predictions via Influence Functions"',
        formula=r"\mathcal{I}_{\mathrm{up,loss}}(z,z_{\mathrm{test}})=-\nabla_\theta\ell(z_{\mathrm{test}};\hat\theta)^{\top}"
                r"\left(H_{\hat\theta}+\lambda I\right)^{-1}\nabla_\theta\ell(z;\hat\theta)",
        read="Negative values are helpful training examples, positive ones harmful.",
        limits="A second-order approximation around the trained weights, restricted to the last layer; "
               "fragile for deep non-convex models (Basu et al. 2021).",
        section="data.influence",
    ),
    MethodEntry(
        name="decision_set", family="data", title="Interpretable Decision Sets",
        summary="a small set of if-then rules that mimics the network, with fidelity and coverage",
        citation='Lakkaraju, Bach & Leskovec 2016, "Interpretable Decision Sets: A Joint Framework for '
                 'Description and Prediction"',
        formula=r"R^\ast=\mathrm{argmax}_{R\subseteq S}\ \sum_{i=1}^{7}\lambda_i f_i(R)",
        read="Each rule reads 'if these features hold then the network says this class'; fidelity is how "
             "often the rules agree with the network.",
        limits="Only as expressive as the binary features; a surrogate explains the network's outputs, not its "
               "mechanism.",
        section="data.decision_set",
    ),
    MethodEntry(
        name="tree_surrogate", family="data", title="Tree and rule-list surrogates",
        summary="a depth-limited tree and a greedy rule list on the same features, as baselines",
        citation='Breiman et al. 1984, "Classification and Regression Trees"; Clark & Niblett 1989, '
                 '"The CN2 Induction Algorithm"',
        formula=r"\mathrm{fidelity}=\frac{1}{N}\sum_{n=1}^{N}\mathbf{1}\left[g(x_n)=f(x_n)\right]",
        read="Baselines for the decision set: the same features, other rule learners.",
        limits="Deep trees are accurate but unreadable; the depth is a setting.",
        section="data.decision_set",
    ),
)

FEATURES: Tuple[MethodEntry, ...] = (
    MethodEntry(
        name="channel", family="features", title="Feature visualisation (channel objective)",
        summary="images optimised from noise to excite one channel (Lucid's recipe)",
        citation=f"{OLAH_2017}; Erhan et al. 2009",
        read="Repeated patterns are what the unit looks for; colours and textures mean more than the layout.",
        limits="Shows what maximally excites a unit, not what it typically responds to; depends on the "
               "parameterisation, transforms, steps and seed.",
        section="features",
    ),
    MethodEntry(
        name="diversity", family="features", title="Diversity set",
        summary="several images of one unit, pushed apart by a Gram-matrix similarity penalty",
        citation=f'{OLAH_2017}, section "Diversity"',
        read="Different things that all excite the unit.",
        limits="The penalty trades activation for variety; a few images sample only a little of a unit.",
        section="features",
    ),
    MethodEntry(
        name="negative", family="features", title="Negative visualisation",
        summary="the image a unit dislikes most",
        citation=f'{OLAH_2017} ("negative" objectives in Lucid)',
        read="It drives the channel's mean activation down.",
        limits="After a ReLU a unit cannot go below zero, so negatives of such layers are flat.",
        section="features",
    ),
    MethodEntry(
        name="examples", family="features", title="Dataset examples",
        summary="the dataset images on which a unit fires most, cropped around the peak",
        citation=f'{ZEILER_2014}; Schubert et al. 2020, "OpenAI Microscope"',
        read="The crop is about three activation cells around the strongest position.",
        limits="Only as informative as the dataset; the crop approximates the receptive field.",
        section="features",
    ),
    MethodEntry(
        name="deconvnet", family="features", title="Deconvnet projection",
        summary="a unit's strongest activation projected back to pixels",
        citation=ZEILER_2014,
        read="Colours show which input pixels and edges feed that activation; grey is zero.",
        limits="Largely class- and unit-insensitive; mostly reconstructs image edges (Nie et al. 2018).",
        section="features",
    ),
    MethodEntry(
        name="class", family="features", title="Class visualisation",
        summary="an image optimised to raise one class's logit",
        citation=f'Simonyan, Vedaldi & Zisserman 2013, "Deep Inside Convolutional Networks"; {OLAH_2017}',
        read="Recognisable parts of the class appear, often repeated and out of context.",
        limits="The logit also rises by suppressing other classes; one image is one of many solutions.",
        section="features",
    ),
    MethodEntry(
        name="deepdream", family="features", title="DeepDream",
        summary="photos changed by gradient ascent on a whole layer's activation",
        citation='Mordvintsev, Olah & Tyka 2015, "Inceptionism: Going Deeper into Neural Networks"',
        read="The layer amplifies what it already sees.",
        limits="Qualitative; the strength depends on step size, steps and octaves.",
        section="features",
    ),
    MethodEntry(
        name="filters", family="features", title="First-layer filters",
        summary="the first convolution's weights shown as images",
        citation=f'Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep Convolutional Neural '
                 f'Networks"; {ZEILER_2014}',
        read="Grey is zero, light positive, dark negative; colour filters show colour contrasts.",
        limits="Only the first layer's weights are directly interpretable as images.",
        section="features",
    ),
)

BLOCKS: Tuple[MethodEntry, ...] = (
    MethodEntry(
        name="semantic_dictionary", family="blocks", title="Semantic dictionary",
        summary="for each position of a layer, the channels that fire most there, as icons",
        citation=OLAH_2018, section="blocks",
        limits="Icons are feature visualisations, with their limits; only the strongest channels are shown.",
    ),
    MethodEntry(
        name="activation_grid", family="blocks", title="Activation grid",
        summary="one feature visualisation per position of the activation vector there",
        citation=OLAH_2018, section="blocks",
        limits="A direction in activation space need not be a meaningful concept.",
    ),
    MethodEntry(
        name="spatial_attribution", family="blocks", title="Spatial attribution",
        summary="activation x gradient summed over channels: where a class draws on a layer",
        citation=OLAH_2018, section="blocks",
        formula=r"A_{ij} = \sum_c a_{cij} \frac{\partial f_t}{\partial a_{cij}}",
        limits="A first-order Taylor estimate; exact only where the rest of the network is affine in the layer.",
    ),
    MethodEntry(
        name="channel_attribution", family="blocks", title="Channel attribution",
        summary="activation x gradient summed over positions: which channels a class draws on",
        citation=OLAH_2018, section="blocks",
        formula=r"A_c = \sum_{ij} a_{cij} \frac{\partial f_t}{\partial a_{cij}}",
        limits="A first-order Taylor estimate, as spatial attribution.",
    ),
    MethodEntry(
        name="neuron_groups", family="blocks", title="Neuron groups (NMF)",
        summary="a few groups of neurons from a non-negative factorisation of the activations",
        citation=f'{OLAH_2018}; Cichocki & Phan 2009, "Fast local algorithms for large scale nonnegative matrix '
                 f'and tensor factorizations"',
        section="blocks",
        limits="The number of groups is a setting; signed layers need splitting or clamping.",
    ),
    MethodEntry(
        name="layer_attribution", family="blocks", title="Layer-to-layer attribution",
        summary="how positions and groups of a lower layer feed those of an upper one",
        citation=OLAH_2018, section="blocks",
        limits="Linear read-outs of the upper layer; first-order as the other attributions.",
    ),
)
