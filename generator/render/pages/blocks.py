"""Building Blocks pages (Olah et al. 2018, "The Building Blocks of Interpretability", Distill).

Per (model, dataset): an overview with the article's teaser (two competing classes) for every
image, and per image three pages: semantic dictionary + activation grid, attribution (spatial,
channel, layer-to-layer) and neuron groups with the group flow between consecutive layers.

Interaction needs no server: ``templates/assets/blocks.js`` (plain JavaScript, copied to
``docs/assets/blocks/blocks.js``) reads the image's data from a script written next to the
pages (``<image>.data.js`` sets ``window.modelcardBlocks``; a script, not a fetched JSON file, so
the pages work opened from disk) and updates a legend when the reader hovers or taps a grid
cell, an upper-layer position or a group. The pages are complete without JavaScript (static
legends for the strongest cell/group). Every finding carries its quality figure and a plain
verdict when it is weak (:mod:`generator.render.verdicts`).

Reads the typed ``blocks`` and ``blocks-icons`` records (:mod:`generator.records.blocks`); each
artifact's ``summary.json`` (cells, groups, attributions, flow) is free-form interface data the
browser script reads as is, so it stays a dict.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from generator import resources
from generator.records import BlocksIconsRecord, BlocksRecord
from generator.render import verdicts
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages import blocks_views as bv
from generator.render.pages.outcome import colour_bars
from generator.render.text import slug

# Found where the templates are (the checkout, or the package's copy in a wheel install).
JS_SOURCE = str(resources.TEMPLATES / "assets" / "blocks.js")
JS_TARGET = "assets/blocks/blocks.js"
DISPLAY = 392  # px: the activation grid at most (it shrinks to the column on a phone)
DATA_GLOBAL = "window.modelcardBlocks"  # what <image>.data.js sets and blocks.js reads


def _classes(summary: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {c["index"]: c for c in summary["classes"]}


def _layer_view(site: SiteContext, art, icons: Optional[bv.Sprite]) -> Dict[str, Any]:
    """Everything the templates and the JSON need for one (image, layer) artifact."""
    w = site.writer
    rec: BlocksRecord = art.rec
    summary, arr = art.load_json("summary"), art.load_npz("arrays")
    key = art.key
    gh, gw = summary["grid"]
    pixels = bv.big(arr["pixels"], DISPLAY)
    # photographic pictures as JPEG / WebP: a page of them stays well under a few MB
    photo = w.image(f"assets/gen/{key}/photo.jpg", pixels)
    grid_sprite = bv.sprite(w, f"assets/gen/{key}/grid.png", arr["grid_icons"], list(range(gh * gw)), cols=gw)
    k = arr["group_icons"].shape[0]
    group_sprite = bv.sprite(w, f"assets/gen/{key}/groups.png", arr["group_icons"], list(range(k)), cols=k)
    upper_sprite = None
    if "upper_group_icons" in arr:
        ku = arr["upper_group_icons"].shape[0]
        upper_sprite = bv.sprite(w, f"assets/gen/{key}/upper-groups.png", arr["upper_group_icons"], list(range(ku)),
                                 cols=ku)
    names = _classes(summary)
    tokens = bv.token_view(summary)
    class_maps = []
    for i, sa in enumerate(summary["spatial_attribution"]):
        c = names[sa["class"]]
        # a token layer with special tokens: the patch grid's part (the map) and theirs (no place)
        split = tokens["parts"].get(sa["class"]) if tokens is not None and tokens["label"] else None
        cmap = arr["class_maps"][i]
        class_maps.append({"name": c["name"], "prob": c["prob"], "total": sa["total"], "split": split,
                           "end": bv.map_end(cmap, True, pixels.shape), "max": float(np.abs(cmap).max()),
                           "image": w.image(f"assets/gen/{key}/class-{i}.webp", bv.map_overlay(pixels, cmap, True))})
    groups = []
    for g in summary["groups"]:
        gi = g["id"]
        gmap = arr["group_maps"][gi]
        groups.append({**g, "colour": bv.GROUP_COLOURS[gi % len(bv.GROUP_COLOURS)],
                       "end": bv.map_end(gmap, False, pixels.shape), "max": float(np.abs(gmap).max()),
                       "image": w.image(f"assets/gen/{key}/group-{gi}.webp", bv.map_overlay(pixels, gmap, False)),
                       "class_names": [[names[c]["name"], v] for c, v in g["classes"]]})
    group_map = w.image(f"assets/gen/{key}/groups-map.webp", bv.group_overlay(pixels, arr["group_maps"]))
    mag = arr["magnitude"]
    strongest = int(np.argmax(mag))
    rankings = []
    for r in summary["channel_attribution"]:
        c = names[r["class"]]
        top = max([abs(v) for _, v in r["support"] + r["oppose"]] or [1.0])
        rankings.append({"name": c["name"], "prob": c["prob"], "support": r["support"], "oppose": r["oppose"],
                         "scale": top})
    competing = None
    if "competing" in summary:
        cc = summary["competing"]
        top = max([abs(v) for _, v in cc["for_a"] + cc["for_b"]] or [1.0])
        competing = {"a": names[cc["a"]], "b": names[cc["b"]], "for_a": cc["for_a"],
                     "for_b": [[ch, -v] for ch, v in cc["for_b"]], "scale": top}
    l2l = None
    if "layer_to_layer" in summary:
        m = np.asarray(summary["layer_to_layer"]["maps"], np.float32)  # Q x (h*w)
        uh, uw = summary["layer_to_layer"]["upper_grid"]
        q = int(np.argmax(np.abs(m).sum(1)))
        summed, one = m.sum(0).reshape(gh, gw), m[q].reshape(gh, gw)
        l2l = {"upper": rec.upper, "upper_grid": [uh, uw], "strongest": q,
               "total_end": bv.map_end(summed, True, pixels.shape), "total_max": float(np.abs(summed).max()),
               "one_end": bv.map_end(one, True, pixels.shape), "one_max": float(np.abs(one).max()),
               "total": w.image(f"assets/gen/{key}/l2l-total.webp", bv.map_overlay(pixels, summed, True)),
               "one": w.image(f"assets/gen/{key}/l2l-{q}.webp", bv.map_overlay(pixels, one, True))}
    cell = summary["cells"][strongest]
    listed = [v for _, v in cell["channels"] if v > 0]
    first = summary["channel_attribution"][0] if summary["channel_attribution"] else None
    quality = {
        "nmf": verdicts.nmf(float(summary["group_error"]), len(groups)),
        "dictionary": verdicts.dictionary(sum(v * v for v in listed) / max(cell["magnitude"] ** 2, 1e-30),
                                          len(cell["channels"])),
        "ranking": None if first is None else verdicts.ranking(
            sum(v for _, v in first["support"]), float(summary["spatial_attribution"][0]["total"]),
            len(first["support"]), int(summary["channels"])),
    }
    return {"key": key, "layer": rec.layer, "upper": rec.upper, "grid": [gh, gw], "photo": photo, "quality": quality,
            "class_totals": {int(sa["class"]): float(sa["total"]) for sa in summary["spatial_attribution"]},
            "summary": summary, "grid_sprite": grid_sprite, "group_sprite": group_sprite, "upper_sprite": upper_sprite,
            "icons": icons, "class_maps": class_maps, "groups": groups, "group_map": group_map,
            "strongest": strongest, "cell": cell, "names": names, "rankings": rankings,
            "competing": competing, "l2l": l2l, "magnitude": mag, "group_maps": arr["group_maps"],
            "slug": slug(rec.layer), "tokens": tokens,
            "shares": bv.token_shares(tokens, summary) if tokens is not None and tokens["label"] else None}


def _flow_view(lower: Dict[str, Any], upper: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The Sankey-like diagram: lower groups -> upper groups (-> top classes, when the upper
    layer's own artifact has the same groups, so its group attribution applies)."""
    f = lower["summary"].get("flow")
    if f is None:
        return None
    names = lower["names"]
    lo = [{"label": f"G{g['id']}", "id": f"0-{g['id']}", "icon": g["id"], "sprite": "lower", "colour": g["colour"]}
          for g in lower["groups"]]
    up = [{"label": f"G{g['id']}", "id": f"1-{g['id']}", "icon": g["id"], "sprite": "upper",
           "colour": bv.GROUP_COLOURS[g["id"] % len(bv.GROUP_COLOURS)]} for g in f["upper_groups"]]
    to_class = None
    cls_nodes: List[Dict[str, Any]] = []
    if upper is not None and len(upper["groups"]) == len(up):
        same = np.allclose(upper["group_maps"], np.asarray([g["map"] for g in f["upper_groups"]]), rtol=1e-2, atol=1e-3)
        if same:
            top = lower["summary"]["top_classes"][:3]
            rows = {c: {k: v for k, v in g["classes"]} for g in upper["summary"]["groups"] for c in [g["id"]]}
            to_class = np.array([[rows[g["id"]].get(c, 0.0) for c in top] for g in f["upper_groups"]])
            cls_nodes = [{"label": names[c]["name"] if c in names else upper["names"][c]["name"], "id": f"2-{i}",
                          "icon": None, "sprite": None, "colour": "#888"} for i, c in enumerate(top)]
    matrix = np.asarray(f["matrix"], np.float64)
    layout = bv.sankey(lo, up, cls_nodes, matrix, to_class)
    # What a link's number is a share of: upper group h's whole activation x gradient (every
    # lower group plus the part of the lower activation no group reconstructs), and for a link
    # to a class, the class's total attribution at the upper layer.
    residual = np.asarray(f.get("residual", [0.0] * matrix.shape[1]), np.float64)
    upper_totals = matrix.sum(0) + residual
    class_totals = [upper["class_totals"].get(c, 0.0) for c in lower["summary"]["top_classes"][:3]] \
        if to_class is not None else []
    for link in layout["links"]:
        c0, i = (int(t) for t in link["from"].split("-"))
        j = int(link["to"].split("-")[1])
        if c0 == 0:
            total, of = float(upper_totals[j]), f"upper group G{up[j]['icon']}'s total"
        else:
            total, of = float(class_totals[j]), f"{cls_nodes[j]['label']}'s total at {f['upper']}"
        share = verdicts.share_text(link["value"], total)
        link["title"] = (f"{link['value']:+.3g}" + (f" = {share.replace(' of ', f' of {of} ', 1)}" if share else ""))
    strongest = max(((i, j, v) for i, row in enumerate(f["matrix"]) for j, v in enumerate(row)), key=lambda t: t[2])
    i, j, value = strongest
    return {**layout, "lower": f["lower"], "upper": f["upper"], "strongest": strongest,
            "strongest_share": verdicts.share_text(value, float(upper_totals[j])),
            "upper_totals": [float(t) for t in upper_totals], "with_classes": to_class is not None}


def _learn_dictionary(v: Dict[str, Any]) -> str:
    h, w = v["grid"]
    cell = v["cell"]
    counts: Dict[int, int] = {}
    for cl in v["summary"]["cells"]:
        for c, _ in cl["channels"]:
            counts[c] = counts.get(c, 0) + 1
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    top = ", ".join(f"{c} ({val:.3g})" for c, val in cell["channels"][:3])
    n = len(cell["channels"])
    return (f"At {v['layer']} ({h} x {w} positions, {v['summary']['channels']} channels) the strongest position is "
            f"row {cell['row']}, column {cell['col']} (activation norm {cell['magnitude']:.3g}); "
            f"channels {top} fire most "
            f"there, and locally it argues most for {v['names'][cell['classes'][0][0]]['name']}. Channels "
            + ", ".join(f"{c} (in the top {n} of {k} positions)" for c, k in common)
            + f" recur most across the image; {len(counts)} of {v['summary']['channels']} channels reach a top {n} "
              "somewhere. " + v["quality"]["dictionary"].text)


def _learn_attribution(v: Dict[str, Any]) -> str:
    parts = []
    r = v["rankings"][0]
    pos = sum(val for _, val in r["support"])
    if r["support"]:
        ch, val = r["support"][0]
        parts.append(f"For {r['name']} (p = {r['prob']:.2f}) channel {ch} carries {val:.3g} of the attribution "
                     f"({100 * val / pos:.0f}% of what its top {len(r['support'])} supporting channels give).")
    if v["competing"] is not None:
        cc = v["competing"]
        parts.append(f"Between {cc['a']['name']} and {cc['b']['name']}, "
                     f"channels {bv.channel_list(cc['for_a'])} argue for "
                     f"the first and channels {bv.channel_list(cc['for_b'])} for the second.")
    total = v["class_maps"][0]["total"]
    parts.append(f"Summed over all positions and channels, the linear approximation of the {r['name']} logit "
                 f"relative to a zero activation at {v['layer']} is {total:+.3g}; a zero activation is not a neutral "
                 f"input, so compare classes and positions with each other rather than reading the sign alone.")
    if v["quality"]["ranking"] is not None:
        parts.append(f"Quality of the ranking for {r['name']}: {v['quality']['ranking'].text}")
    if v["tokens"] is not None:
        parts.extend(_learn_tokens(v))
    return " ".join(parts)


def _learn_tokens(v: Dict[str, Any]) -> List[str]:
    """What a token layer (vision transformer) adds to the attribution page's lesson."""
    tok, first = v["tokens"], v["class_maps"][0]
    parts = []
    if first["split"] is not None:
        label, verb = tok["label"], "are" if len(tok["names"]) > 1 else "is"
        parts.append(f"Of that total the patch grid (the map) carries {bv.fmt(first['split']['grid'])} and the "
                     f"{label} {bv.fmt(first['split']['prefix'])}; the {label} {verb} "
                     "not a place in the image, so no map shows that part. With a class-token head a late layer's "
                     "attribution lies mostly there: the logits read the class token, and patch tokens reach it "
                     "only through the attention of the blocks above.")
    if tok["flat"]:
        parts.append(f"Every position's map here is about zero (largest |value| {tok['map_max']:.2g}, against "
                     f"{tok['channel_max']:.3g} for the strongest channel). On a residual-stream layer "
                     "(blocks.i) this holds by construction: every later layer reads the stream through a "
                     "LayerNorm, which ignores the input's scale, so activation x gradient sums to zero over "
                     "each token's channels. Read the channel attribution instead, or choose an MLP layer "
                     "(blocks.i.mlp.fc1 in timm's naming) for a spatial map.")
    return parts


def _learn_groups(v: Dict[str, Any], flow: Optional[Dict[str, Any]]) -> str:
    top = v["summary"]["top_classes"][0]
    name = v["names"][top]["name"]
    best = max(v["groups"], key=lambda g: dict(g["classes"]).get(top, 0.0))
    val = dict(best["classes"]).get(top, 0.0)
    resid = dict((c, r) for c, r in v["summary"]["group_residual"]).get(top, 0.0)
    share = next((s for s in v["shares"] if s["class"] == top), None) if v["shares"] is not None else None
    where = "the patch grid's activation" if share is not None else "the activation"
    total = v["class_totals"].get(top, 0.0)
    of_total = verdicts.share_text(val, total)
    text = (f"{v['quality']['nmf'].text} Group G{best['id']} (channels {bv.channel_list(best['channels'])}) drives "
            f"{name} most at {v['layer']} ({bv.fmt(val)} logit units of activation x gradient"
            f"{', ' + of_total + ', the class total here' if of_total else ''}); the part of {where} the "
            f"{len(v['groups'])} groups do not reconstruct contributes {bv.fmt(resid)}.")
    if share is not None:
        label = v["tokens"]["label"]
        text += (f" The {label}, not a place in the image, belong{'' if len(v['tokens']['names']) > 1 else 's'} "
                 f"to no group and to no residual: {'they carry' if len(v['tokens']['names']) > 1 else 'it carries'} "
                 f"{bv.fmt(share['prefix'])} of {name}'s total {bv.fmt(share['total'])} (groups "
                 f"{bv.fmt(share['groups'])} + residual {bv.fmt(share['residual'])} + {label} "
                 f"{bv.fmt(share['prefix'])}).")
    if flow is not None:
        i, j, fv = flow["strongest"]
        text += (f" In the flow to {flow['upper']}, G{i} feeds upper group G{j} most: {bv.fmt(fv)}, the activation x "
                 f"gradient of G{i}'s part of {v['layer']} with respect to G{j}'s readout (in {flow['upper']}'s "
                 "activation units)"
                 + (f", {flow['strongest_share']}, G{j}'s whole attribution from {v['layer']}."
                    if flow["strongest_share"] else "."))
    return text


def _page_json(views: List[Dict[str, Any]], rel) -> Dict[str, Any]:
    """The hover data of one image (all its layers), with icon sprites relative to the page."""
    out = {"layers": {}}
    for v in views:
        s = v["summary"]
        entry = {
            "layer": v["layer"], "grid": v["grid"], "channels": s["channels"],
            "classes": {str(c["index"]): c for c in s["classes"]},
            "cells": s["cells"], "groups": [{"id": g["id"], "map": g["map"], "channels": g["channels"],
                                            "classes": g["classes"]} for g in s["groups"]],
            "icons": v["icons"].json(rel) if v["icons"] is not None else None,
            "grid_sprite": v["grid_sprite"].json(rel),
        }
        if "layer_to_layer" in s:
            entry["layer_to_layer"] = s["layer_to_layer"]
        if "flow" in s:
            entry["flow"] = {"matrix": s["flow"]["matrix"], "upper_groups": s["flow"]["upper_groups"]}
        out["layers"][v["slug"]] = entry
    return out


def blocks_pages(site: SiteContext) -> List[Any]:
    arts = site.manifest.find("blocks")
    if not arts:
        return []
    w = site.writer
    js_target = w.docs / JS_TARGET
    js_target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(JS_SOURCE, js_target)
    by_pair: "OrderedDict[Tuple[str, str], OrderedDict[str, list]]" = OrderedDict()
    for a in arts:
        b: BlocksRecord = a.rec
        by_pair.setdefault((b.model, b.dataset), OrderedDict()).setdefault(b.image, []).append(a)
    nav: List[Any] = []
    for (model_id, ds_id), images in by_pair.items():
        base = f"blocks/{slug(model_id)}/{slug(ds_id)}"
        sprites: Dict[str, bv.Sprite] = {}
        for ia in site.manifest.find("blocks-icons", model=model_id, dataset=ds_id):
            data = ia.load_npz("icons")
            icons_rec: BlocksIconsRecord = ia.rec
            sprites[icons_rec.layer] = bv.sprite(w, f"assets/gen/{ia.key}/channels.png", data["icons"],
                                                    [int(c) for c in data["channels"]])
        model = site.models.get(model_id, {"title": model_id})
        dc = next((d for d in getattr(site.config, "datasets", None) or [] if d.id == ds_id), None)
        dataset_title = (dc.title or dc.id) if dc is not None else ds_id
        bars = colour_bars(site)
        paint = {signed: w.image(f"assets/gen/blocks-paint-{'signed' if signed else 'unsigned'}.png",
                                 bv.paint_bar(signed)) for signed in (False, True)}
        entries, overview = [], []
        for image_id, layer_arts in images.items():
            views = [_layer_view(site, a, sprites.get(a.rec.layer)) for a in layer_arts]
            flows = [_flow_view(v, views[i + 1] if i + 1 < len(views) else None) for i, v in enumerate(views)]
            rec: BlocksRecord = layer_arts[0].rec
            stem = f"{base}/{slug(image_id)}"
            data_rel = f"{stem}.data.js"
            pages = {"dictionary": f"{stem}-dictionary.md", "attribution": f"{stem}-attribution.md",
                     "groups": f"{stem}-groups.md"}
            here = os.path.dirname(data_rel)

            def rel_from_pages(target: str, here: str = here) -> str:
                return os.path.relpath(target, here)

            path = w.docs / data_rel
            path.parent.mkdir(parents=True, exist_ok=True)
            # A script that sets a global, not a JSON file to fetch: browsers refuse fetch() on
            # pages opened from disk (file://), and a <script src> works there.
            path.write_text(DATA_GLOBAL + " = " + json.dumps(_page_json(views, rel_from_pages), separators=(",", ":"))
                            + ";\n")
            w.assets.add(data_rel)
            (w.docs / f"{stem}.json").unlink(missing_ok=True)  # the fetched file of earlier versions
            common = dict(model=model, dataset=ds_id, dataset_title=dataset_title, image=rec, views=views,
                          flows=flows, pages=pages, data_file=data_rel, script=JS_TARGET, colours=bv.GROUP_COLOURS,
                          display=DISPLAY, bars=bars, paint=paint)
            w.page(pages["dictionary"], "blocks_dictionary.md.j2", learn=[_learn_dictionary(v) for v in views],
                   **common)
            w.page(pages["attribution"], "blocks_attribution.md.j2", learn=[_learn_attribution(v) for v in views],
                   **common)
            w.page(pages["groups"], "blocks_groups.md.j2",
                   learn=[_learn_groups(v, f) for v, f in zip(views, flows)], **common)
            title = rec.title
            entries.append({title: [{"Semantic dictionary & activation grid": pages["dictionary"]},
                                    {"Attribution": pages["attribution"]}, {"Neuron groups & flow": pages["groups"]}]})
            overview.append({"image": rec, "views": views, "pages": pages})
        w.page(f"{base}/index.md", "blocks_overview.md.j2", model=model, dataset=ds_id, dataset_title=dataset_title,
               images=overview)
        nav.append({f"{model['title']} on {ds_id}": [{"Overview": f"{base}/index.md"}, *entries]})
    return nav


register_pages(PageBuilder(name="blocks", order=40, section="Building blocks", build=blocks_pages))
