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
}


def info(method: str) -> Dict[str, str]:
    return METHOD_INFO.get(method, {"title": method.replace("_", " ").capitalize(), "formula": "", "read": ""})
