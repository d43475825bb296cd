"""The paper's reported numbers (Tang et al., ACM MM 2023): 5-way accuracy (%) and 95% CI.

Used by ``m3net reproduce`` to put each reproduced cell beside the paper's, and by the README.
"""
import dataclasses

DATASETS = ("diving48", "gym99", "gym288")
# The paper's names of the heads (m3net.model registry names) and of M3Net's views (§3.4: the three matchers and Y).
METHOD_NAMES = {"tsn-cosine": "TSN + cosine", "protonet": "ProtoNet", "otam": "OTAM", "pal": "PAL", "trx": "TRX",
                "strm": "STRM", "hyrsm": "HyRSM", "m3net": "M3Net"}
VIEW_NAMES = {"y1": "Y1 (I-M)", "y2": "Y2 (C-M)", "y3": "Y3 (T-M)", "y": "Y (fused)"}
SHOTS = (1, 3, 5)

# Table 1: method -> dataset -> ((1-shot acc, ci), (3-shot ...), (5-shot ...)).
TABLE1 = {
    "tsn-cosine": {"diving48": ((29.72, 0.25), (35.69, 0.26), (38.81, 0.26)),
                   "gym99": ((36.63, 0.30), (41.35, 0.31), (42.76, 0.31)),
                   "gym288": ((36.68, 0.29), (42.87, 0.29), (44.82, 0.30))},
    "protonet": {"diving48": ((59.80, 0.33), (74.74, 0.29), (77.69, 0.28)),
                 "gym99": ((62.99, 0.36), (74.25, 0.31), (77.99, 0.30)),
                 "gym288": ((58.98, 0.35), (70.56, 0.31), (74.87, 0.30))},
    "otam": {"diving48": ((41.64, 0.29), (47.96, 0.27), (49.78, 0.26)),
             "gym99": ((48.93, 0.35), (52.88, 0.32), (55.61, 0.32)),
             "gym288": ((47.58, 0.33), (53.67, 0.31), (55.62, 0.31))},
    "pal": {"diving48": ((50.40, 0.24), (57.57, 0.27), (61.17, 0.27)),
            "gym99": ((58.85, 0.31), (65.13, 0.32), (68.64, 0.33)),
            "gym288": ((58.32, 0.32), (63.62, 0.34), (65.77, 0.35))},
    "trx": {"diving48": ((62.53, 0.32), (77.81, 0.29), (82.01, 0.26)),
            "gym99": ((66.55, 0.33), (80.15, 0.30), (83.86, 0.27)),
            "gym288": ((64.03, 0.35), (76.73, 0.30), (81.05, 0.27))},
    "strm": {"diving48": ((62.29, 0.34), (77.79, 0.29), (81.03, 0.27)),
             "gym99": ((68.09, 0.34), (80.93, 0.29), (84.33, 0.26)),
             "gym288": ((64.81, 0.36), (76.98, 0.31), (80.64, 0.28))},
    "hyrsm": {"diving48": ((61.04, 0.30), (76.04, 0.30), (81.74, 0.28)),
              "gym99": ((67.09, 0.33), (78.15, 0.32), (82.92, 0.31)),
              "gym288": ((62.86, 0.35), (73.12, 0.32), (78.81, 0.31))},
    "m3net": {"diving48": ((72.35, 0.33), (82.50, 0.26), (85.44, 0.24)),
              "gym99": ((72.70, 0.33), (83.03, 0.27), (86.71, 0.24)),
              "gym288": ((68.66, 0.34), (79.73, 0.29), (83.05, 0.26))},
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """An ablation of the m3net head (Tables 2-4, all on Gym99, 5-way): its head options and what the
    paper reports for it, ``paper[shot][view]`` = accuracy (%), ``"y"`` the fused prediction and
    ``"y1"``/``"y2"``/``"y3"`` where the table gives a view's own accuracy (Table 4). No CIs."""

    table: int
    options: dict
    paper: dict


ABLATION_DATASET = "gym99"
_NO_ENCODERS = {"use_ifce": False, "use_ivce": False, "use_iece": False}
_ONLY = {"im": {"use_cm": False, "use_tm": False}, "cm": {"use_im": False, "use_tm": False},
         "tm": {"use_im": False, "use_cm": False}}
_ALL = ("ifce", "ivce", "iece")

# Table 2 (1-shot): one matcher, with and without its encoders.
TABLE2 = {
    "t2-im": Variant(2, {**_NO_ENCODERS, **_ONLY["im"]}, {1: {"y": 46.53}}),
    "t2-ifce-im": Variant(2, {"use_ivce": False, "use_iece": False, **_ONLY["im"]}, {1: {"y": 50.09}}),
    "t2-cm": Variant(2, {**_NO_ENCODERS, **_ONLY["cm"]}, {1: {"y": 64.66}}),
    "t2-ivce-cm": Variant(2, {"use_ifce": False, "use_iece": False, **_ONLY["cm"]}, {1: {"y": 68.92}}),
    "t2-ifce-ivce-cm": Variant(2, {"use_iece": False, **_ONLY["cm"]}, {1: {"y": 69.53}}),
    "t2-tm": Variant(2, {**_NO_ENCODERS, **_ONLY["tm"]}, {1: {"y": 44.50}}),
    "t2-iece-tm": Variant(2, {"use_ifce": False, "use_ivce": False, **_ONLY["tm"]}, {1: {"y": 58.15}}),
    "t2-ifce-iece-tm": Variant(2, {"use_ivce": False, **_ONLY["tm"]}, {1: {"y": 59.79}}),
}

# Table 3 (1- and 5-shot): which encoders each matcher reads. Columns 1-3: one matcher over all three
# encoders (the other two off); column 4 swaps C-M and T-M; column 5 is M3Net's default routing.
TABLE3 = {
    "t3-im-all": Variant(3, {"im_features": _ALL, **_ONLY["im"]}, {1: {"y": 68.05}, 5: {"y": 73.08}}),
    "t3-cm-all": Variant(3, {"cm_features": _ALL, **_ONLY["cm"]}, {1: {"y": 72.05}, 5: {"y": 85.40}}),
    "t3-tm-all": Variant(3, {"tm_features": _ALL, **_ONLY["tm"]}, {1: {"y": 68.13}, 5: {"y": 75.37}}),
    "t3-swap": Variant(3, {"cm_features": ("iece",), "tm_features": ("ivce",)}, {1: {"y": 72.22}, 5: {"y": 82.64}}),
    "t3-m3net": Variant(3, {}, {1: {"y": 72.70}, 5: {"y": 86.71}}),
}

# Table 4 (1-shot): which matchers (so which losses L1-L3 and views Y1-Y3) are on, model indices 1-7.
TABLE4 = {
    "t4-1": Variant(4, _ONLY["im"], {1: {"y1": 50.09, "y": 50.09}}),
    "t4-2": Variant(4, _ONLY["cm"], {1: {"y2": 69.53, "y": 69.53}}),
    "t4-3": Variant(4, _ONLY["tm"], {1: {"y3": 59.79, "y": 59.79}}),
    "t4-4": Variant(4, {"use_im": False}, {1: {"y2": 70.21, "y3": 68.51, "y": 71.81}}),
    "t4-5": Variant(4, {"use_cm": False}, {1: {"y1": 57.93, "y3": 59.76, "y": 60.94}}),
    "t4-6": Variant(4, {"use_tm": False}, {1: {"y1": 65.59, "y2": 70.60, "y": 71.47}}),
    "t4-7": Variant(4, {}, {1: {"y1": 69.35, "y2": 71.82, "y3": 69.89, "y": 72.70}}),
}

ABLATIONS = {**TABLE2, **TABLE3, **TABLE4}


def table1_cell(method, dataset, shot):
    """(accuracy, ci) the paper reports, or None where Table 1 has no such cell."""
    if dataset not in DATASETS or shot not in SHOTS:
        return None
    return TABLE1.get(method, {}).get(dataset, (None,) * 3)[SHOTS.index(shot)]


def ablation_cell(variant, dataset, shot):
    """{view: accuracy} the paper reports for ablation ``variant`` (a key of ABLATIONS), or None where its
    table has no such cell."""
    return ABLATIONS[variant].paper.get(shot) if dataset == ABLATION_DATASET else None
