"""Formulas, how-to-read notes, papers and known limits of the feature-visualisation methods,
shown on the "Model" pages (kept beside the pages that use them; no torch)."""

from __future__ import annotations

from typing import Dict

FEATURE_METHODS: Dict[str, Dict[str, str]] = {
    "channel": {
        "title": "Feature visualisation (channel objective)",
        "formula": r"x^{\star}=\mathrm{arg\,max}_{x}\;\mathbb{E}_{t\sim T}\,"
                   r"\frac{1}{HW}\sum_{i,j}a_{c,i,j}\big(t(x)\big),"
                   r"\quad x=\sigma\big(\mathrm{decorrelate}(\mathcal{F}^{-1}\hat{z})\big)",
        "read": "Each image is optimised, starting from noise, so that one channel of the layer fires as "
                "strongly as possible on average over all positions. Repeated patterns are what the unit "
                "looks for; colours and textures mean more than the layout, which is arbitrary.",
        "paper": "Olah, Mordvintsev & Schubert 2017, \"Feature Visualization\" (Distill); Erhan et al. 2009.",
        "limits": "An optimised image shows what maximally excites a unit, not what it typically responds "
                  "to; the result depends on the parameterisation (Fourier basis with 1/f scaling and "
                  "decorrelated colour), the random transforms (pad, jitter, scale, rotate), the number of "
                  "steps and the seed. Few steps on a CPU give fainter, less finished images than Lucid's "
                  "512 steps. Channels of deep layers are often polysemantic (respond to unrelated things).",
    },
    "diversity": {
        "title": "Diversity set",
        "formula": r"\max_{x_1..x_n}\;\sum_{k}\overline{a_c}(x_k)\;-\;\lambda\sum_{k\neq l}"
                   r"\cos\big(G(x_k),G(x_l)\big)",
        "read": "Several images of the same unit, optimised together with a penalty on the similarity of "
                "their Gram matrices (their \"style\"), so they show different things that excite the unit.",
        "paper": "Olah, Mordvintsev & Schubert 2017, section \"Diversity\".",
        "limits": "The penalty trades activation for variety (the weight is a setting); a set of four "
                  "images samples only a little of what a unit responds to.",
    },
    "negative": {
        "title": "Negative visualisation",
        "formula": r"x^{-}=\mathrm{arg\,max}_{x}\;-\overline{a_c}(x)",
        "read": "The image the unit dislikes most: it drives the channel's mean activation down.",
        "paper": "Olah, Mordvintsev & Schubert 2017 (\"negative\" objectives in Lucid).",
        "limits": "After a ReLU a unit cannot go below zero, so negatives of such layers are flat; the "
                  "EfficientNet block outputs are linear (no activation), so their negatives are meaningful.",
    },
    "examples": {
        "title": "Dataset examples",
        "formula": r"s_c(x_n)=\max_{i,j}\,a_{c,i,j}(x_n),\qquad \text{top-}k\text{ of }s_c\text{ over the dataset}",
        "read": "The dataset images on which the unit's strongest position fires most, with the crop around "
                "that position (about three activation cells, a rough receptive field) and the activation "
                "value (signed: block outputs can be negative).",
        "paper": "Zeiler & Fergus 2014; OpenAI Microscope (Schubert et al. 2020).",
        "limits": "Only as informative as the dataset: the sample photos are a handful of images, so their "
                  "\"top\" examples are simply the images that fire the unit least weakly. The crop is an "
                  "approximation of the receptive field, not its exact extent.",
    },
    "deconvnet": {
        "title": "Deconvnet projection",
        "formula": r"R=\frac{\partial a_{c,y^{\star},x^{\star}}}{\partial x}\;\text{ with every ReLU's backward }"
                   r"g\mapsto\max(0,g)",
        "read": "The strongest activation of the unit (its top dataset example at the arg-max position) "
                "projected back to pixel space; grey is zero, colours show which input pixels and edges "
                "feed that activation.",
        "paper": "Zeiler & Fergus 2014, \"Visualizing and Understanding Convolutional Networks\".",
        "limits": "Deconvnet projections are largely class- and unit-insensitive and mostly reconstruct image "
                  "edges (Nie et al. 2018; Adebayo et al. 2018); max-pooling uses the recorded switches.",
    },
    "class": {
        "title": "Class visualisation",
        "formula": r"x^{\star}=\mathrm{arg\,max}_{x}\;\mathbb{E}_{t\sim T}\,z_{y}\big(t(x)\big)",
        "read": "An image optimised to raise the pre-softmax logit of one class; recognisable parts of the "
                "class (textures, eyes, wheels) appear, often repeated and out of context.",
        "paper": "Simonyan, Vedaldi & Zisserman 2013; Olah, Mordvintsev & Schubert 2017.",
        "limits": "The logit rises also by suppressing other classes' evidence; images are not natural and "
                  "one image shows one of many ways to get a high score.",
    },
    "deepdream": {
        "title": "DeepDream",
        "formula": r"x\leftarrow x+\eta\,\frac{\nabla_{x}\,\overline{a_{\ell}(x)^{2}}}{\mathrm{mean}\,|\nabla_{x}|}",
        "read": "Each photo is changed by gradient ascent on the mean squared activation of a whole layer, at "
                "a few scales (octaves) and with random shifts: the layer amplifies what it already sees.",
        "paper": "Mordvintsev, Olah & Tyka 2015, \"Inceptionism: Going Deeper into Neural Networks\".",
        "limits": "A qualitative picture: the strength of the effect depends on the step size, the number of "
                  "steps and octaves; the whole layer is amplified at once, so single units are not separable.",
    },
    "filters": {
        "title": "First-layer filters",
        "formula": r"\tilde W_f=\tfrac12+\tfrac12\,\frac{W_f}{\max|W_f|}",
        "read": "The weights of the first convolution, one tile per filter, each scaled by its own largest "
                "weight: grey is zero, light is positive, dark is negative; colour filters show which colour "
                "contrasts they detect.",
        "paper": "Krizhevsky, Sutskever & Hinton 2012 (figure 3); Zeiler & Fergus 2014.",
        "limits": "Only the first layer's weights are directly interpretable as images; per-filter scaling "
                  "hides how strong a filter is relative to the others.",
    },
}
