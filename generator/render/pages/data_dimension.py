"""Data pages ("interpreting the data and the model's logic"): prototypes and criticisms,
influential training examples, and the decision-set surrogate, for each (model, dataset) pair
the data stages ran on. numpy only: no torch here.

Reads the typed ``data_*`` records (:mod:`generator.records.data`); the section settings
(``params``) and the surrogates' ``metrics`` tables stay dicts.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records import InfluenceRecord, PrototypeEntry, PrototypesRecord, SurrogateRecord
from generator.render import images as img
from generator.render import verdicts
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug

THUMB = 84  # 28 x 28 images at 3x

FORMULAS = {
    "mmd": r"\mathrm{MMD}^2(X,S)=\frac{1}{n^2}\sum_{i,j=1}^{n}k(x_i,x_j)"
           r"-\frac{2}{nm}\sum_{i=1}^{n}\sum_{j\in S}k(x_i,x_j)"
           r"+\frac{1}{m^2}\sum_{i,j\in S}k(x_i,x_j)",
    "witness": r"w(x)=\frac{1}{n}\sum_{i=1}^{n}k(x,x_i)-\frac{1}{m}\sum_{j\in S}k(x,x_j)",
    "critic": r"C^\ast=\mathrm{argmax}_{C}\ \sum_{c\in C}\left|w(c)\right|+\log\det K_{C,C}",
    "rbf": r"k(x,y)=\exp\left(-\frac{\|x-y\|^2}{2\sigma^2}\right)",
    "tracin": r"\mathrm{TracIn}(z,z')=\sum_{k}\eta_k\,\nabla_\theta\ell(z;\theta_k)\cdot\nabla_\theta\ell(z';\theta_k)",
    "influence": r"\mathcal{I}_{\mathrm{up,loss}}(z,z_{\mathrm{test}})="
                 r"-\nabla_\theta\ell(z_{\mathrm{test}};\hat\theta)^{\top}"
                 r"\left(H_{\hat\theta}+\lambda I\right)^{-1}\nabla_\theta\ell(z;\hat\theta)",
    "ids": r"R^\ast=\mathrm{argmax}_{R\subseteq S}\ \sum_{i=1}^{7}\lambda_i f_i(R)",
    "fidelity": r"\mathrm{fidelity}=\frac{1}{N}\sum_{n=1}^{N}\mathbf{1}\left[g(x_n)=f(x_n)\right]",
}


def region_icon(box: List[int], dark: bool, shape: tuple) -> np.ndarray:
    """A small picture of a region predicate: the region filled black ("dark") or white
    ("bright") on a mid-grey image with a red outline."""
    h, w = shape
    icon = np.full((h, w, 3), 150, np.uint8)
    r0, r1, c0, c1 = box
    icon[r0:r1, c0:c1] = 15 if dark else 240
    icon[r0:r1, [c0, max(c0, c1 - 1)]] = (220, 40, 40)
    icon[[r0, max(r0, r1 - 1)], c0:c1] = (220, 40, 40)
    return icon


def _thumb(writer, key: str, name: str, pixels: np.ndarray, size: int = THUMB) -> str:
    return writer.image(f"assets/gen/{key}/{name}.png", img.upscale(pixels, size))


def _base(model_id: str, ds_id: str) -> str:
    return f"data/{slug(model_id)}/{slug(ds_id)}"


def dataset_title(site: SiteContext, ds_id: str) -> str:
    dc = next((d for d in site.config.datasets if d.id == ds_id), None)
    return (dc.title or dc.id) if dc is not None else ds_id


def subjects(split, model_title: str, ds_title: str) -> Dict[str, str]:
    """Which images a page shows, in words for its title: the training images are the model's
    own training split when the report trained it, else the reference part of the dataset; the
    held-out images are the dataset's. A page about training images never says "on <test set>"."""
    train = f"{model_title}'s training split" if split.from_training else f"{ds_title} (reference part)"
    held = f"{ds_title}" if split.from_training else f"{ds_title} (held-out part)"
    return {"train": train, "held": held}


def prototype_page(site: SiteContext, art, model: Dict[str, Any], ds_id: str) -> str:
    rec: PrototypesRecord = art.rec
    writer = site.writer
    z = art.load_npz("images")
    where = {int(r): i for i, r in enumerate(z["rows"])}
    names = rec.class_names

    def entries(items: List[PrototypeEntry]) -> List[Dict[str, Any]]:
        return [{**dict(e), "image": _thumb(writer, art.key, f"row-{e.row}", z["pixels"][where[e.row]]),
                 "label_name": names[e.label], "prediction_name": names[e.prediction],
                 "wrong": e.prediction != e.label} for e in items]

    everything = rec.global_
    groups = [{"title": "All classes", "anchor": "all", "prototypes": entries(everything.prototypes),
               "criticisms": entries(everything.criticisms), "n": everything.n}]
    for c in rec.classes:
        groups.append({"title": c.name, "anchor": f"class-{c.label}", "n": c.n,
                       "prototypes": entries(c.prototypes), "criticisms": entries(c.criticisms)})
    page = f"{_base(rec.model, ds_id)}/prototypes.md"
    writer.page(page, "data_prototypes.md.j2", rec=rec, model=model, dataset=ds_id, groups=groups, formulas=FORMULAS,
                subject=subjects(rec.split, model["title"], dataset_title(site, ds_id)))
    return page


def influence_page(site: SiteContext, art, model: Dict[str, Any], ds_id: str) -> str:
    rec: InfluenceRecord = art.rec
    writer = site.writer
    z = art.load_npz("influence")
    names = rec.class_names
    train_at = {int(r): i for i, r in enumerate(z["train_rows"])}
    tests = []
    for i, test in enumerate(rec.tests):
        t = {**dict(test), "image": _thumb(writer, art.key, f"test-{slug(test.id)}", z["test_pixels"][i], 112),
             "label_name": names[test.label], "prediction_name": names[test.prediction], "methods": []}
        for name, m in rec.methods.items():
            sides = {"helpful": (m.helpful, m.helpful_scores), "harmful": (m.harmful, m.harmful_scores)}
            cols = {}
            for side, (rows, scores) in sides.items():
                cols[side] = [{"row": r, "score": s, "label_name": names[rec.train[str(r)].label],
                               "source_index": rec.train[str(r)].source_index,
                               "image": _thumb(writer, art.key, f"train-{r}", z["train_pixels"][train_at[r]])}
                              for r, s in zip(rows[i], scores[i])]
            t["methods"].append({"name": name, **cols})
        tests.append(t)
    overlap = {}
    if "tracin" in rec.methods and "influence_functions" in rec.methods:
        a, b = rec.methods["tracin"], rec.methods["influence_functions"]
        pairs = {"helpful": (a.helpful, b.helpful), "harmful": (a.harmful, b.harmful)}
        overlap = {side: float(np.mean([len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(xa, xb)]))
                   for side, (xa, xb) in pairs.items()}
    page = f"{_base(rec.model, ds_id)}/influence.md"
    writer.page(page, "data_influence.md.j2", rec=rec, model=model, dataset=ds_id, tests=tests,
                formulas=FORMULAS, overlap=overlap,
                subject=subjects(rec.split, model["title"], dataset_title(site, ds_id)))
    return page


def surrogate_page(site: SiteContext, art, model: Dict[str, Any], ds_id: str) -> str:
    rec: SurrogateRecord = art.rec
    writer = site.writer
    z = art.load_npz("surrogate")
    names = rec.class_names
    ex_at = {int(r): i for i, r in enumerate(z["example_rows"])}
    icon_at = {int(r): i for i, r in enumerate(z["icon_rows"])}
    shape = tuple(z["example_pixels"].shape[1:3]) if len(z["example_pixels"]) else tuple(z["icon_pixels"].shape[1:3]) \
        if len(z["icon_pixels"]) else (28, 28)

    def icon(fi: int) -> Optional[str]:
        f = rec.features[fi]
        if f.kind == "region_intensity":
            return writer.image(f"assets/gen/{art.key}/feature-{fi}.png",
                                img.upscale(region_icon(f.params["box"], f.params["quantile"] < 0.5, shape), 42))
        if f.icon_row is not None:
            return _thumb(writer, art.key, f"icon-{f.icon_row}", z["icon_pixels"][icon_at[f.icon_row]], 42)
        return None

    # metrics: surrogate -> fit | held_out -> metric (a dict: the metric functions' own names)
    held, fit = rec.metrics["ids"]["held_out"], rec.metrics["ids"]["fit"]
    rules = []
    for i, r in enumerate(rec.rules):
        rules.append({**dict(r), "conditions": [{"name": rec.features[f].name,
                                                 "description": rec.features[f].description, "icon": icon(f)}
                                                for f in r.items],
                      "class_name": names[r.label], "support": held["rule_support"][i],
                      "precision": held["rule_precision"][i],
                      "fit_support": fit["rule_support"][i],
                      "fit_precision": fit["rule_precision"][i],
                      "examples": [{"image": _thumb(writer, art.key, f"example-{e}", z["example_pixels"][ex_at[e]], 56),
                                    "prediction": names[int(z["y_held"][e])], "label": names[int(z["label_held"][e])]}
                                   for e in r.examples]})
    table = []
    for key, title, size in (("ids", "Decision set (IDS)", len(rec.rules)),
                             ("rule_list", "Rule list", len(rec.rule_list.lengths)),
                             ("tree", f"Tree (depth ≤ {rec.params['tree_depth']})", len(rec.tree.lengths))):
        m = rec.metrics[key]
        table.append({"title": title, "fit": m["fit"], "held": m["held_out"], "size": size})
    # The quality of the finding: fidelity against always answering the network's most common
    # class on the same held-out images, and against the baselines fitted on the same features.
    majority = verdicts.majority_rate(np.asarray(z["y_held"]).tolist())
    verdict = verdicts.surrogate(float(held["fidelity"]), majority, float(held["coverage"]),
                                 {"rule list": float(rec.metrics["rule_list"]["held_out"]["fidelity"]),
                                  "tree": float(rec.metrics["tree"]["held_out"]["fidelity"])})
    page = f"{_base(rec.model, ds_id)}/decision-set.md"
    writer.page(page, "data_decision_set.md.j2", rec=rec, model=model, dataset=ds_id, rules=rules, table=table,
                formulas=FORMULAS, default_name=names[rec.default_class],
                default_list_name=names[rec.rule_list.default_class], verdict=verdict, majority=majority,
                subject=subjects(rec.split, model["title"], dataset_title(site, ds_id)))
    site.shared.setdefault("data_surrogate", {})[(rec.model, ds_id)] = {
        "fidelity": held["fidelity"], "rules": len(rec.rules), "mean_length": held["mean_length"],
        "majority": majority, "verdict": verdict.text, "weak": verdict.weak}
    return page


def data_dimension_pages(site: SiteContext) -> List[Any]:
    manifest, models = site.manifest, site.models
    nav: List[Any] = []
    for model_id, ds_id in manifest.pairs:
        if model_id not in models:
            continue
        entries = []
        for kind, title, build in (("data_prototypes", "Prototypes and criticisms", prototype_page),
                                   ("data_influence", "Influential examples", influence_page),
                                   ("data_surrogate", "Decision set", surrogate_page)):
            art = manifest.one(kind, model=model_id, dataset=ds_id)
            if art is not None:
                entries.append({title: build(site, art, models[model_id], ds_id)})
        if entries:
            nav.append({f"{models[model_id]['title']} on {ds_id}": entries})
    return nav


register_pages(PageBuilder(name="data dimension", order=21, section="Data", build=data_dimension_pages))
