"""NumPy reference of SSD's MultiBoxLoss (weiliu89/caffe, branch ssd), written from the C++:
multibox_loss_layer.cpp (Forward_cpu, Backward_cpu) and bbox_util.cpp (GetGroundTruth, MatchBBox,
FindMatches, MineHardExamples, EncodeBBox, EncodeLocPrediction, EncodeConfPrediction,
ComputeConfLoss), with the inner SmoothL1Loss / EuclideanLoss / SoftmaxWithLoss /
SigmoidCrossEntropyLoss layers. Independent of the Swift implementation; float64 arithmetic.

Usage: python3 multibox_loss.py inputs.npz config.json  -> prints JSON
  {"loss": float, "normalizer": float, "matches": int, "negatives": int,
   "loc_grad": [...], "conf_grad": [...]}   (gradients for a top diff of 1)
inputs.npz holds loc (N x P*L*4), conf (N x P*C), prior (1 x 2 x 4P), label (1 x 1 x G x 8).
config.json holds the multibox_loss_param fields by their prototxt names, plus "normalization"
and optional "propagate_down" (list of 4 booleans).
"""
import json
import math
import sys

import numpy as np


def bbox_size(b):
    xmin, ymin, xmax, ymax = b
    if xmax < xmin or ymax < ymin:
        return 0.0
    return (xmax - xmin) * (ymax - ymin)


def jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw > 0 and ih > 0:
        inter = iw * ih
        return inter / (bbox_size(a) + bbox_size(b) - inter)
    return 0.0


def cross_boundary(b):
    return any(v < 0 or v > 1 for v in b)


def decode(prior, var, code, vit, o):
    pxmin, pymin, pxmax, pymax = prior
    pw, ph = pxmax - pxmin, pymax - pymin
    v = [1, 1, 1, 1] if vit else var
    if code == "CORNER":
        return [pxmin + v[0] * o[0], pymin + v[1] * o[1], pxmax + v[2] * o[2], pymax + v[3] * o[3]]
    if code == "CENTER_SIZE":
        pcx, pcy = (pxmin + pxmax) / 2, (pymin + pymax) / 2
        cx, cy = v[0] * o[0] * pw + pcx, v[1] * o[1] * ph + pcy
        w, h = math.exp(v[2] * o[2]) * pw, math.exp(v[3] * o[3]) * ph
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    return [pxmin + v[0] * o[0] * pw, pymin + v[1] * o[1] * ph, pxmax + v[2] * o[2] * pw, pymax + v[3] * o[3] * ph]


def encode(prior, var, code, vit, t):
    pxmin, pymin, pxmax, pymax = prior
    v = [1, 1, 1, 1] if vit else var
    if code == "CORNER":
        return [(t[0] - pxmin) / v[0], (t[1] - pymin) / v[1], (t[2] - pxmax) / v[2], (t[3] - pymax) / v[3]]
    pw, ph = pxmax - pxmin, pymax - pymin
    if code == "CENTER_SIZE":
        pcx, pcy = (pxmin + pxmax) / 2, (pymin + pymax) / 2
        tw, th = t[2] - t[0], t[3] - t[1]
        tcx, tcy = (t[0] + t[2]) / 2, (t[1] + t[3]) / 2
        return [(tcx - pcx) / pw / v[0], (tcy - pcy) / ph / v[1], math.log(tw / pw) / v[2], math.log(th / ph) / v[3]]
    return [(t[0] - pxmin) / pw / v[0], (t[1] - pymin) / ph / v[1], (t[2] - pxmax) / pw / v[2], (t[3] - pymax) / ph / v[3]]


def match_bbox(gts, preds, label, match_type, threshold, ignore_cross):
    n = len(preds)
    idx = [-1] * n
    ovl = [0.0] * n
    gt_ids = [i for i, g in enumerate(gts) if label == -1 or g["label"] == label]
    if not gt_ids:
        return idx, ovl
    overlaps = {}
    for i in range(n):
        if ignore_cross and cross_boundary(preds[i]):
            idx[i] = -2
            continue
        for j, g in enumerate(gt_ids):
            o = jaccard(preds[i], gts[g]["box"])
            if o > 1e-6:
                ovl[i] = max(ovl[i], o)
                overlaps.setdefault(i, {})[j] = o
    pool = list(range(len(gt_ids)))
    while pool:
        best = (-1, -1, -1.0)
        for i in sorted(overlaps):
            if idx[i] != -1:
                continue
            for j in pool:
                if j in overlaps[i] and overlaps[i][j] > best[2]:
                    best = (i, j, overlaps[i][j])
        if best[0] == -1:
            break
        idx[best[0]] = gt_ids[best[1]]
        ovl[best[0]] = best[2]
        pool.remove(best[1])
    if match_type == "PER_PREDICTION":
        for i in sorted(overlaps):
            if idx[i] != -1:
                continue
            bj, bo = -1, -1.0
            for j in range(len(gt_ids)):
                if j in overlaps[i] and overlaps[i][j] >= threshold and overlaps[i][j] > bo:
                    bj, bo = j, overlaps[i][j]
            if bj != -1:
                idx[i] = gt_ids[bj]
                ovl[i] = bo
    return idx, ovl


def softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def logistic_loss(x, t):
    # -(x (t - [x>=0]) - log(1 + exp(x - 2 x [x>=0])))
    pos = 1.0 if x >= 0 else 0.0
    return -(x * (t - pos) - math.log(1 + math.exp(x - 2 * x * pos)))


def main():
    data = np.load(sys.argv[1])
    cfg = json.load(open(sys.argv[2]))
    loc, conf = data["loc"].astype(np.float64), data["conf"].astype(np.float64)
    prior, label = data["prior"].astype(np.float64).reshape(2, -1), data["label"].astype(np.float64).reshape(-1, 8)
    N = loc.shape[0]
    P = prior.shape[1] // 4
    C = cfg["num_classes"]
    share = cfg.get("share_location", True)
    L = 1 if share else C
    bg = cfg.get("background_label_id", 0)
    code = cfg.get("code_type", "CORNER")
    vit = cfg.get("encode_variance_in_target", False)
    match_type = cfg.get("match_type", "PER_PREDICTION")
    thr = cfg.get("overlap_threshold", 0.5)
    use_prior = cfg.get("use_prior_for_matching", True)
    ignore_cross = cfg.get("ignore_cross_boundary_bbox", False)
    mining = cfg.get("mining_type", "MAX_NEGATIVE")
    ratio = cfg.get("neg_pos_ratio", 3.0)
    neg_ovl = cfg.get("neg_overlap", 0.5)
    sample_size = cfg.get("sample_size", 64)
    smooth = cfg.get("loc_loss_type", "SMOOTH_L1") == "SMOOTH_L1"
    soft = cfg.get("conf_loss_type", "SOFTMAX") == "SOFTMAX"
    loc_weight = cfg.get("loc_weight", 1.0)
    use_difficult = cfg.get("use_difficult_gt", True)
    normalization = cfg.get("normalization", "VALID")
    pd = cfg.get("propagate_down", [True, True, False, False])

    loc = loc.reshape(N, P, L, 4)
    conf = conf.reshape(N, P, C)
    priors = [list(prior[0, 4 * p:4 * p + 4]) for p in range(P)]
    variances = [list(prior[1, 4 * p:4 * p + 4]) for p in range(P)]

    # GetGroundTruth
    gts = {}
    for r in label:
        item = int(r[0])
        if item == -1:
            continue
        if not use_difficult and r[7] != 0:
            continue
        gts.setdefault(item, []).append({"label": int(r[1]), "box": list(r[3:7])})

    # FindMatches: per image an ordered list of (label, indices) and a dict of overlaps.
    matches, overlaps = [], []
    for i in range(N):
        m, o = [], {}
        if i in gts:
            g = gts[i]
            if not use_prior:
                for c in range(L):
                    lab = -1 if share else c
                    if not share and lab == bg:
                        continue
                    boxes = [decode(priors[p], variances[p], code, vit, loc[i, p, c]) for p in range(P)]
                    idx, ovl = match_bbox(g, boxes, lab, match_type, thr, ignore_cross)
                    m.append([lab, idx])
                    o[lab] = ovl
            else:
                idx, ovl = match_bbox(g, priors, -1, match_type, thr, ignore_cross)
                if share:
                    m.append([-1, idx])
                    o[-1] = ovl
                else:
                    for c in range(L):
                        if c == bg:
                            continue
                        m.append([c, [k if k > -1 and g[k]["label"] == c else -1 for k in idx]])
                        o[c] = ovl
        matches.append(m)
        overlaps.append(o)

    def loc_pairs():
        pairs = []
        for i in range(N):
            for lab, idx in matches[i]:
                c = 0 if share else lab
                for j, k in enumerate(idx):
                    if k <= -1:
                        continue
                    t = encode(priors[j], variances[j], code, vit, gts[i][k]["box"])
                    pr = list(loc[i, j, c])
                    if vit:
                        pr = [pr[q] / variances[j][q] for q in range(4)]
                        t = [t[q] / variances[j][q] for q in range(4)]
                    pairs.append(((i, j, c), np.array(pr), np.array(t)))
        return pairs

    def loc_loss_of(d):
        if smooth:
            a = abs(d)
            return (0.5 * d * d, d) if a < 1 else (a - 0.5, float(np.sign(d)))
        return 0.5 * d * d, d

    # MineHardExamples
    negatives = [[] for _ in range(N)]
    if mining != "NONE":
        loc_losses = np.zeros((N, P))
        if mining == "HARD_EXAMPLE":
            for (i, j, c), pr, t in loc_pairs():
                loc_losses[i, j] = sum(loc_loss_of(pr[q] - t[q])[0] for q in range(4))
        for i in range(N):
            conf_loss = np.zeros(P)
            for p in range(P):
                lab = bg
                for _, idx in matches[i]:
                    if idx[p] > -1:
                        lab = gts[i][idx[p]]["label"]
                        break
                if soft:
                    conf_loss[p] = -math.log(max(softmax(conf[i, p])[lab], np.finfo(np.float32).tiny))
                else:
                    conf_loss[p] = sum(logistic_loss(conf[i, p, c], 1.0 if c == lab else 0.0) for c in range(C))
            loss = conf_loss + loc_losses[i]
            selected = set()
            for entry in matches[i]:
                lab, idx = entry
                ovl = overlaps[i][lab]
                if mining == "MAX_NEGATIVE":
                    eligible = [m for m in range(P) if idx[m] == -1 and ovl[m] < neg_ovl]
                    num_pos = sum(1 for k in idx if k > -1)
                    n_sel = min(int(np.float32(num_pos) * np.float32(ratio)), len(eligible))
                else:
                    eligible = list(range(P))
                    n_sel = min(sample_size, len(eligible))
                ranked = sorted(eligible, key=lambda m: (-loss[m], m))
                selected.update(ranked[:n_sel])
                for m in range(P):
                    if idx[m] > -1:
                        if mining == "HARD_EXAMPLE" and m not in selected:
                            idx[m] = -1
                    elif idx[m] == -1 and m in selected:
                        negatives[i].append(m)
    num_matches = sum(1 for i in range(N) for _, idx in matches[i] for k in idx if k > -1)

    loc_grad = np.zeros((N, P, L, 4))
    loc_loss = 0.0
    for (i, j, c), pr, t in loc_pairs():
        for q in range(4):
            value, slope = loc_loss_of(pr[q] - t[q])
            loc_loss += value
            loc_grad[i, j, c, q] = loc_weight * slope

    # Confidence rows and targets (EncodeConfPrediction).
    rows = []
    if mining == "NONE":
        for i in range(N):
            labels = [bg if soft else -1] * P
            if i in gts:
                for _, idx in matches[i]:
                    for j, k in enumerate(idx):
                        if k > -1:
                            labels[j] = gts[i][k]["label"]
            rows += [(i, j, labels[j]) for j in range(P)]
    else:
        for i in range(N):
            if i not in gts:
                continue
            for _, idx in matches[i]:
                rows += [(i, j, gts[i][k]["label"]) for j, k in enumerate(idx) if k > -1]
            rows += [(i, j, bg) for j in negatives[i]]
    conf_grad = np.zeros((N, P, C))
    conf_loss = 0.0
    for i, j, lab in rows:
        x = conf[i, j]
        if soft:
            prob = softmax(x)
            conf_loss -= math.log(max(prob[lab], np.finfo(np.float32).tiny))
            g = prob.copy()
            g[lab] -= 1
            conf_grad[i, j] = g
        else:
            for c in range(C):
                t = 1.0 if c == lab else float(bg)
                conf_loss += logistic_loss(x[c], t)
                conf_grad[i, j, c] = 1 / (1 + math.exp(-x[c])) - t

    normalizer = {"FULL": N * P, "VALID": num_matches, "BATCH_SIZE": N, "NONE": 1}[normalization]
    normalizer = max(1.0, float(normalizer))
    loss = 0.0
    if pd[0]:
        loss += loc_weight * loc_loss / normalizer
    if pd[1]:
        loss += conf_loss / normalizer
    print(json.dumps({"loss": loss, "normalizer": normalizer, "matches": num_matches,
                      "negatives": sum(len(n) for n in negatives),
                      "loc_grad": (loc_grad / normalizer).reshape(-1).tolist(),
                      "conf_grad": (conf_grad / normalizer).reshape(-1).tolist()}))


if __name__ == "__main__":
    main()
