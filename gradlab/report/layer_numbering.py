"""Where each layer sits along depth: one number per layer, the same in every figure.

A zoo net numbers its main-path conv/fc layers (shortcut projections left out), so a
weight and its output share a number. A run of someone's own model (gradlab.watch)
numbers every layer it knows, in the order they ran: each weight matrix's module and each
watched point (norms included), so that ‖∂L/∂W‖ of a layer's weight, ‖∂L/∂h‖ at its output
and the std of that output have one index, and tick labels can name the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WEIGHTED_KINDS = ("conv", "fc")
TIED = " = "  # between the names of one tensor that several modules share
MAIN = "main"


@dataclass(frozen=True)
class LayerMap:
    """Positions along depth of the probe points and parameters of one model.

    weight_pos: parameter/point name -> 1-based position of the weighted layer it belongs to
                (main-path conv and fc weights of zoo nets; every weight matrix of someone's
                own model, embeddings included).
    conv_point_pos: point name -> position of the outputs whose ||dL/dh|| is drawn (conv
                outputs; conv and linear outputs for someone's own model), the same
                position as the layer's weight.
    bn_pos:     BN point name -> 1-based position among main-path BN layers.
    act_pos:    point name -> position of the outputs whose std is drawn along depth: the
                residual blocks' outputs (zoo ResNets and their plain twins), else every
                main-path point's (for someone's own model, in the one numbering above).
    point_kinds: point name -> its kind (fc, conv, norm, bn, block, ...).
    """

    weight_pos: dict[str, int]
    conv_point_pos: dict[str, int]
    bn_pos: dict[str, int]
    kinds: dict[int, str]  # weighted position -> "conv" | "fc" (own models: any kind)
    act_pos: dict[str, int] = field(default_factory=dict)
    point_kinds: dict[str, str] = field(default_factory=dict)
    shown_as: dict[str, str] = field(default_factory=dict)  # a tied parameter -> "its name = its other names"


def layer_name(parameter: str) -> str:
    """The layer a parameter belongs to, as its output point is named ("embed.weight" -> "embed");
    a tied parameter's several names, each so ("wte.weight = lm_head.weight" -> "wte = lm_head")."""
    if TIED in parameter:
        return TIED.join(layer_name(p) for p in parameter.split(TIED))
    return parameter[: -len(".weight")] if parameter.endswith(".weight") else parameter


def zoo_map(pts: list[tuple]) -> LayerMap:
    """``pts``: (index, name, kind, role) of a zoo net's probe points, in depth order."""
    weighted = [(name, kind) for _, name, kind, role in pts if kind in WEIGHTED_KINDS and role == MAIN]
    bns = [name for _, name, kind, role in pts if kind == "bn" and role == MAIN]
    blocks = [name for _, name, kind, _ in pts if kind == "block"]
    outputs = blocks or [name for _, name, _, role in pts if role == MAIN]
    return LayerMap(
        weight_pos={f"{n}.weight": i + 1 for i, (n, _) in enumerate(weighted)},
        conv_point_pos={n: i + 1 for i, (n, k) in enumerate(weighted) if k == "conv"},
        bn_pos={n: i + 1 for i, n in enumerate(bns)},
        kinds={i + 1: k for i, (_, k) in enumerate(weighted)},
        act_pos={n: i + 1 for i, n in enumerate(outputs)},
        point_kinds={name: kind for _, name, kind, _ in pts},
    )


def own_model_map(pts: list[tuple], params: list[dict]) -> LayerMap:
    """One numbering for someone's own model: its weight matrices' layers and its main-path
    points, ordered by where they ran (the recorder's index), ties by name."""
    matrices = [p for p in params if len(p.get("shape", ())) >= 2]
    place: dict[str, tuple[int, str]] = {}  # layer -> (index, kind)
    for p in matrices:
        place.setdefault(layer_name(p["name"]), (int(p.get("index", -1)), p.get("kind", "other")))
    for index, name, kind, role in pts:
        if role == MAIN:
            place.setdefault(name, (index, kind))
    order = sorted(place, key=lambda name: (place[name][0], name))
    pos = {name: i + 1 for i, name in enumerate(order)}
    main = [(name, kind) for _, name, kind, role in pts if role == MAIN]
    return LayerMap(
        weight_pos={p["name"]: pos[layer_name(p["name"])] for p in matrices},
        conv_point_pos={n: pos[n] for n, k in main if k in WEIGHTED_KINDS},
        bn_pos={n: i + 1 for i, n in enumerate(n for n, k in main if k == "bn")},
        kinds={pos[name]: kind for name, (_, kind) in place.items()},
        act_pos={n: pos[n] for n, _ in main},
        point_kinds={name: kind for _, name, kind, _ in pts},
        shown_as={p["name"]: TIED.join([p["name"], *p["aliases"]]) for p in matrices if p.get("aliases")},
    )
