"""A simulated reader-study pilot with known reads, and its results worked out by hand.

20 cases (numbered 1-20), 3 readers (r1, r2, r3), mode "AI after an unaided read". Findings:
M = malignant, B = benign, N = normal.

* Reference: cases 1-8 M, 9-14 B, 15-20 N (8 malignant, 12 not).
* AI: 1-7 M, 8 N (missed cancer), 9-13 B, 14 M (false alarm), 15-19 N, 20 B. AI wrong on 8, 14, 20.
* r1: unaided = reference except 1 -> B (conf 2), 9 -> M (conf 2); aided = unaided except 1 -> M,
  8 -> N (follows the wrong AI). Confidence 4 elsewhere.
* r2: unaided = reference except 2 -> N, 3 -> N (conf 3), 15 -> M; aided = unaided except 2 -> M,
  15 -> N, 14 -> M (follows the wrong AI). Confidence 5 elsewhere (case 3: 3 in both phases).
* r3: unaided = reference except 8 -> B, 10 -> N; aided = unaided except 10 -> B. Confidence 4.

Times (seconds): r1 unaided 60 on odd cases, 40 on even ones, aided 20; r2 unaided 90, aided 30;
r3 unaided 30 + case number (31..50), aided 10.
SUS: r1 first answers all 1/5 alternating (score 0), later all 3 (50: the latest counts); r2
5/1 alternating (100); r3 4/2 alternating (75). A lead's answer does not count.

The expected numbers below are counted by hand from these reads (the working is in the comments);
they are written as fractions, not computed by the code under test.
"""

from __future__ import annotations

CASES = list(range(1, 21))
REFERENCE = {c: "malignant" if c <= 8 else "benign" if c <= 14 else "normal" for c in CASES}
AI = {**{c: "malignant" for c in range(1, 8)}, 8: "normal", **{c: "benign" for c in range(9, 14)}, 14: "malignant",
      **{c: "normal" for c in range(15, 20)}, 20: "benign"}
READERS = ("r1", "r2", "r3")


def _reads() -> dict[str, dict[str, dict[int, tuple[str, int]]]]:
    """{reader: {phase: {case: (finding, confidence)}}}."""
    out: dict[str, dict[str, dict[int, tuple[str, int]]]] = {}
    # r1
    u = {c: (REFERENCE[c], 4) for c in CASES}
    u[1], u[9] = ("benign", 2), ("malignant", 2)
    a = {c: (f, 4) for c, (f, _) in u.items()}
    a[1], a[8] = ("malignant", 4), ("normal", 4)
    out["r1"] = {"unaided": u, "aided": a}
    # r2
    u = {c: (REFERENCE[c], 5) for c in CASES}
    u[2], u[3], u[15] = ("normal", 5), ("normal", 3), ("malignant", 5)
    a = dict(u)
    a[2], a[15], a[14] = ("malignant", 5), ("normal", 5), ("malignant", 5)
    out["r2"] = {"unaided": u, "aided": a}
    # r3
    u = {c: (REFERENCE[c], 4) for c in CASES}
    u[8], u[10] = ("benign", 4), ("normal", 4)
    a = dict(u)
    a[10] = ("benign", 4)
    out["r3"] = {"unaided": u, "aided": a}
    return out


READS = _reads()


def unaided_seconds(reader: str, case: int) -> float:
    """Seconds from opening the case to the unaided read."""
    return {"r1": 60.0 if case % 2 else 40.0, "r2": 90.0, "r3": 30.0 + case}[reader]


def aided_seconds(reader: str, case: int) -> float:
    """Seconds from the AI being shown to the aided read."""
    return {"r1": 20.0, "r2": 30.0, "r3": 10.0}[reader]


SUS_ANSWERS = {"r1": [[1, 5] * 5, [3] * 10], "r2": [[5, 1] * 5], "r3": [[4, 2] * 5]}

# --- malignant versus rest (positives = cases 1-8, negatives = 9-20) ---------------------------
# r1 unaided: malignant calls 2-8, 9 -> TP 7, FN 1 (case 1), FP 1 (9), TN 11.
# r1 aided:   calls 1-7, 9      -> TP 7, FN 1 (8), FP 1 (9), TN 11.
# r2 unaided: calls 1, 4-8, 15  -> TP 6, FN 2 (2, 3), FP 1 (15), TN 11.
# r2 aided:   calls 1, 2, 4-8, 14 -> TP 7, FN 1 (3), FP 1 (14), TN 11.
# r3 both:    calls 1-7         -> TP 7, FN 1 (8), FP 0, TN 12.
# pooled unaided TP 20 FN 4 FP 2 TN 34; aided TP 21 FN 3 FP 2 TN 34.
CONFUSION = {  # (tp, fn, tn, fp)
    ("r1", "unaided"): (7, 1, 11, 1), ("r1", "aided"): (7, 1, 11, 1),
    ("r2", "unaided"): (6, 2, 11, 1), ("r2", "aided"): (7, 1, 11, 1),
    ("r3", "unaided"): (7, 1, 12, 0), ("r3", "aided"): (7, 1, 12, 0),
    ("pooled", "unaided"): (20, 4, 34, 2), ("pooled", "aided"): (21, 3, 34, 2),
}

# --- ROC AUC of the rating (M&conf>=4 = 5, M&low = 4, B = 3, N&low = 2, N&conf>=4 = 1) -------
# Pairs: 8 positives x 12 negatives = 96; a pair counts 1 when the positive rates higher, 1/2 tie.
# r1 unaided: pos [3, 5 x7]; neg [4 (case 9), 3 x5, 1 x6]: 7 x 12 + (0 + 5/2 + 6) = 92.5
# r1 aided:   pos [5 x7, 1 (8)]; neg [5 (9), 3 x5, 1 x6]: 7 x 11.5 + 6/2 = 83.5
# r2 unaided: pos [5 x6, 1 (2), 2 (3)]; neg [3 x6, 5 (15), 1 x5]: 6 x 11.5 + 5/2 + 5 = 76.5
# r2 aided:   pos [5 x7, 2 (3)]; neg [3 x5, 5 (14), 1 x6]: 7 x 11.5 + 6 = 86.5
# r3 unaided: pos [5 x7, 3 (8)]; neg [3 x5 (9, 11-14), 1 x7 (10, 15-20)]: 84 + 5/2 + 7 = 93.5
# r3 aided:   pos [5 x7, 3]; neg [3 x6, 1 x6]: 84 + 3 + 6 = 93
AUC = {
    ("r1", "unaided"): 92.5 / 96, ("r1", "aided"): 83.5 / 96,
    ("r2", "unaided"): 76.5 / 96, ("r2", "aided"): 86.5 / 96,
    ("r3", "unaided"): 93.5 / 96, ("r3", "aided"): 93 / 96,
    # pooled = mean of the readers' AUCs
    ("pooled", "unaided"): (92.5 + 76.5 + 93.5) / 3 / 96, ("pooled", "aided"): (83.5 + 86.5 + 93) / 3 / 96,
}

# --- Cohen's kappa with the AI (3 classes); AI counts M 8, B 6, N 6 -----------------------------
# kappa = (p_o - p_e) / (1 - p_e), p_e = sum_k reader_k * ai_k / n^2.
# r1 unaided: agree 15/20; reader M 8 B 6 N 6 -> p_e = (64 + 36 + 36) / 400 -> (300-136)/(400-136)
# r1 aided:   agree 17; M 8 B 5 N 7 -> p_e = (64 + 30 + 42)/400 = 136/400 -> (340-136)/264
# r2 unaided: agree 14; M 7 B 6 N 7 -> p_e = (56 + 36 + 42)/400 = 134/400 -> (280-134)/266
# r2 aided:   agree 17; M 8 B 5 N 7 -> 136/400 -> (340-136)/264
# r3 unaided: agree 16; M 7 B 6 N 7 -> 134/400 -> (320-134)/266
# r3 aided:   agree 17; M 7 B 7 N 6 -> (56 + 42 + 36)/400 = 134/400 -> (340-134)/266
# pooled unaided: agree 45/60; reader M 22 B 18 N 20, AI M 24 B 18 N 18
#   p_e = (528 + 324 + 360)/3600 = 1212/3600 -> (2700-1212)/(3600-1212)
# pooled aided: agree 51/60; reader M 23 B 17 N 20 -> p_e = (552 + 306 + 360)/3600 = 1218/3600
#   -> (3060-1218)/(3600-1218)
KAPPA = {
    ("r1", "unaided"): 164 / 264, ("r1", "aided"): 204 / 264,
    ("r2", "unaided"): 146 / 266, ("r2", "aided"): 204 / 264,
    ("r3", "unaided"): 186 / 266, ("r3", "aided"): 206 / 266,
    ("pooled", "unaided"): 1488 / 2388, ("pooled", "aided"): 1842 / 2382,
}
AGREEMENT_PERCENT = {("r1", "unaided"): 75.0, ("r1", "aided"): 85.0, ("r2", "unaided"): 70.0,
                     ("r2", "aided"): 85.0, ("r3", "unaided"): 80.0, ("r3", "aided"): 85.0,
                     ("pooled", "unaided"): 75.0, ("pooled", "aided"): 85.0}

# --- changes of mind (right = finding equals the reference) ------------------------------------
# r1: 1 wrong->right (AI right), 8 right->wrong (AI wrong), 9 wrong->wrong (AI right), the other 17
#     right->right (14 and 20 with the AI wrong).
# r2: 2 and 15 wrong->right (AI right), 3 wrong->wrong (AI right), 14 right->wrong (AI wrong);
#     16 right->right (8 and 20 with the AI wrong).
# r3: 10 wrong->right (AI right), 8 wrong->wrong (AI wrong); 18 right->right (14, 20 AI wrong).
CHANGES = {  # (reader, ai) -> (n, wrong->right, right->wrong, right->right, wrong->wrong)
    ("r1", "AI right"): (17, 1, 0, 15, 1), ("r1", "AI wrong"): (3, 0, 1, 2, 0),
    ("r2", "AI right"): (17, 2, 0, 14, 1), ("r2", "AI wrong"): (3, 0, 1, 2, 0),
    ("r3", "AI right"): (17, 1, 0, 16, 0), ("r3", "AI wrong"): (3, 0, 0, 2, 1),
    ("pooled", "AI right"): (51, 4, 0, 45, 2), ("pooled", "AI wrong"): (9, 0, 2, 6, 1),
}
# automation bias = right->wrong with AI wrong / cases with the AI wrong
AUTOMATION_BIAS = {"r1": 1 / 3, "r2": 1 / 3, "r3": 0 / 3, "pooled": 2 / 9}

# --- time per case ------------------------------------------------------------------------------
# r1 unaided: ten 60 s and ten 40 s -> mean 50, median 50. r3 unaided: 31..50 -> mean 40.5, median 40.5.
# pooled unaided: mean (50 + 90 + 40.5) / 3; sorted 60 values: 31..39 (9), eleven 40s, 41..50 (10),
#   ten 60s, twenty 90s -> 30th value 50, 31st 60 -> median 55.
TIMES = {  # (reader, phase) -> (mean, median)
    ("r1", "unaided"): (50.0, 50.0), ("r1", "aided"): (20.0, 20.0),
    ("r2", "unaided"): (90.0, 90.0), ("r2", "aided"): (30.0, 30.0),
    ("r3", "unaided"): (40.5, 40.5), ("r3", "aided"): (10.0, 10.0),
    ("pooled", "unaided"): ((50 + 90 + 40.5) / 3, 55.0), ("pooled", "aided"): (20.0, 20.0),
}
# SUS: latest score of each reader: r1 50, r2 100, r3 75 -> mean 75.
SUS = {"r1": 50.0, "r2": 100.0, "r3": 75.0, "pooled": 75.0}
# AUC aided minus unaided, reader-averaged: (263 - 262.5) / 3 / 96
AUC_DIFFERENCE = (263 - 262.5) / 3 / 96
