"""Compares lib/Quant (through iq-quant-driver) with numpy re-implementations
of the Hadamard transform and the quantizers. numpy's rint rounds half to
even, and every quantizer step runs in float32 in the same order as the C
code, so the outputs must match exactly except where noted.

Usage: compare_numpy.py DRIVER WORK_DIR. Prints "PASS name" per check and
exits with 1 on the first mismatch."""
import os
import subprocess
import sys

import numpy as np

DRIVER = sys.argv[1]
WORK = sys.argv[2]
os.makedirs(WORK, exist_ok=True)
F32 = np.float32


def run(*args):
    subprocess.run([DRIVER, *[str(a) for a in args]], check=True)


def fail(name, message):
    print(f"FAIL {name}: {message}")
    sys.exit(1)


def sylvester(m):
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return h


def load_table(k):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "data", "hadamard", f"had{k}.txt")
    with open(path) as f:
        rows = [line.strip() for line in f if line.strip()]
    return np.array([[1.0 if c == "+" else -1.0 for c in row] for row in rows])


def check_hadamard():
    for k, m in [(1, 64), (1, 128), (172, 1), (12, 128), (36, 16), (108, 2), (28, 4), (40, 8), (172, 4)]:
        n = k * m
        expected = np.kron(load_table(k) if k > 1 else np.ones((1, 1)), sylvester(m)) / np.sqrt(n)
        out = os.path.join(WORK, f"h{n}.bin")
        run("hadamard-matrix", n, out)
        got = np.fromfile(out, dtype=np.float64).reshape(n, n)
        if not np.allclose(got, expected, atol=1e-12, rtol=0):
            fail(f"hadamard_matrix_{n}", "differs from the numpy Kronecker product")
        rng = np.random.default_rng(n)
        x = rng.standard_normal((3, n)).astype(F32)
        x.tofile(os.path.join(WORK, "x.bin"))
        run("hadamard", n, 3, os.path.join(WORK, "x.bin"), os.path.join(WORK, "y.bin"))
        y = np.fromfile(os.path.join(WORK, "y.bin"), dtype=F32).reshape(3, n)
        if not np.allclose(y, x.astype(np.float64) @ expected.T, atol=2e-5, rtol=0):
            fail(f"hadamard_rows_{n}", "transform differs from x * H^T")
        run("hadamard-transposed", n, 3, os.path.join(WORK, "y.bin"), os.path.join(WORK, "z.bin"))
        z = np.fromfile(os.path.join(WORK, "z.bin"), dtype=F32).reshape(3, n)
        if not np.allclose(z, x, atol=2e-5, rtol=0):
            fail(f"hadamard_roundtrip_{n}", "transposed transform does not invert")
        print(f"PASS hadamard_numpy_{n}")


def qdq(x, s, z, maxq):
    codes = np.clip(np.rint(x / s) + z, 0, maxq).astype(F32)
    return codes, (s * (codes - z)).astype(F32)


def ref_per_token(x, bits, clip_max, clip_min):
    maxq = F32(2 ** bits - 1)
    xmax = np.maximum(x.max(axis=1), F32(0)) * F32(clip_max)
    xmin = np.minimum(x.min(axis=1), F32(0)) * F32(clip_min)
    empty = (xmax == 0) & (xmin == 0)
    xmax[empty] = 1
    xmin[empty] = -1
    s = np.maximum((xmax - xmin) / maxq, F32(1e-8)).astype(F32)
    z = np.rint(-xmin / s).astype(F32)
    codes, out = qdq(x, s[:, None], z[:, None], maxq)
    return out, codes, s, z


def ref_groupwise(x, bits, clip_max, clip_min, group):
    rows, cols = x.shape
    g = x.reshape(rows * cols // group, group)
    maxq = F32(2 ** bits - 1)
    xmax = g.max(axis=1) * F32(clip_max)
    xmin = g.min(axis=1) * F32(clip_min)
    empty = (xmax == 0) & (xmin == 0)
    xmax[empty] = 1
    xmin[empty] = -1
    s = np.maximum((xmax - xmin) / maxq, F32(1e-6)).astype(F32)
    z = np.rint(-xmin / s).astype(F32)
    codes, out = qdq(g, s[:, None], z[:, None], maxq)
    return out.reshape(rows, cols), codes.reshape(rows, cols), s, z


def ref_weight_errors(w, bits, symmetric):
    """Returns, per row, the (s, z) candidates of the MSE search with their
    errors, in search order (p = 1.00 .. 0.21)."""
    maxq = F32(2 ** bits - 1)
    result = []
    for row in w:
        xmin = min(F32(row.min()), F32(0))
        xmax = max(F32(row.max()), F32(0))
        if symmetric:
            xmax = max(-xmin, xmax)
            xmin = -xmax
        if xmin == 0 and xmax == 0:
            xmin, xmax = F32(-1), F32(1)
        candidates = []
        for k in range(80):
            p = F32(1) - F32(k) / F32(100)
            lo, hi = F32(p * xmin), F32(p * xmax)
            s = F32((hi - lo) / maxq)
            z = F32((maxq + 1) // 2) if symmetric else F32(np.rint(-lo / s))
            _, out = qdq(row, s, z, maxq)
            err = np.sum(np.abs(out.astype(np.float64) - row.astype(np.float64)) ** 2.4)
            candidates.append((err, s, z))
        result.append(candidates)
    return result


def compare(name, got, expected, exact=True):
    for part, g, e in zip(("dequantized", "codes", "scales", "zeros"), got, expected):
        if exact and not np.array_equal(g, e):
            bad = np.argwhere(g != e)[0]
            fail(name, f"{part} differ first at {tuple(bad)}: {g[tuple(bad)]} != {e[tuple(bad)]}")
    print(f"PASS {name}")


def read_result(path, count, params):
    data = np.fromfile(path, dtype=F32)
    return data[:count], data[count:2 * count], data[2 * count:2 * count + params], data[2 * count + params:]


def activation_cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 64)).astype(F32) * F32(2)
    x[3] = 0  # all-zero row
    x[4] = np.abs(x[4])  # positive row: 0 joins the range
    x[5] = -np.abs(x[5])
    x[6] = 1e-10  # tiny range
    x[7, :32] = 0  # half-zero row in groups
    x[8] = (np.arange(64) - 30).astype(F32) * F32(0.5)  # exact halves: ties
    x[9, 5] = 40.0  # outlier that the clip cuts
    return x


def check_quantizers():
    x = activation_cases()
    path_in = os.path.join(WORK, "a.bin")
    path_out = os.path.join(WORK, "q.bin")
    x.tofile(path_in)
    for clip in (1.0, 0.9):
        run("per-token", 4, clip, clip, 16, 64, path_in, path_out)
        out, codes, s, z = ref_per_token(x, 4, clip, clip)
        got = read_result(path_out, x.size, 16)
        compare(f"per_token_clip_{clip}", got, (out.ravel(), codes.ravel(), s, z))
        run("groupwise", 4, clip, clip, 16, 16, 64, path_in, path_out)
        out, codes, s, z = ref_groupwise(x, 4, clip, clip, 16)
        got = read_result(path_out, x.size, 64)
        compare(f"groupwise_clip_{clip}", got, (out.ravel(), codes.ravel(), s, z))

    rng = np.random.default_rng(2)
    w = (rng.standard_t(3, (12, 96)) * 0.02).astype(F32)
    w[2] = 0
    w[3] = np.abs(w[3])
    w.tofile(path_in)
    for symmetric in (0, 1):
        run("weight-rtn", 4, symmetric, 1, 12, 96, path_in, path_out)
        got_out, got_codes, got_s, got_z = read_result(path_out, w.size, 12)
        candidates = ref_weight_errors(w, 4, bool(symmetric))
        for r, row_candidates in enumerate(candidates):
            best = min(err for err, _, _ in row_candidates)
            match = [err for err, s, z in row_candidates if s == got_s[r] and z == got_z[r]]
            # Sums in another order may break a near tie differently.
            if not match or match[0] > best * (1 + 1e-9):
                fail(f"weight_mse_{symmetric}", f"row {r}: (s, z) = ({got_s[r]}, {got_z[r]}) is not the minimum")
            codes, out = qdq(w[r], got_s[r], got_z[r], F32(15))
            if not np.array_equal(codes, got_codes[r * 96:(r + 1) * 96]) or not np.array_equal(out, got_out[r * 96:(r + 1) * 96]):
                fail(f"weight_mse_{symmetric}", f"row {r}: codes or values differ from true INT4 QDQ")
            if np.unique(out).size > 16:
                fail(f"weight_mse_{symmetric}", f"row {r}: more than 16 levels")
        print(f"PASS weight_mse_symmetric_{symmetric}")


def ref_gptq(w, x, scales, zeros, block):
    """Textbook GPTQ in float64 with the given per-row (s, z)."""
    rows, cols = w.shape
    h = 2.0 / x.shape[0] * (x.astype(np.float64).T @ x.astype(np.float64))
    w = w.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += 0.01 * np.mean(np.diag(h)) * np.eye(cols)
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H^-1
    out = np.zeros_like(w)
    for first in range(0, cols, block):
        last = min(first + block, cols)
        errors = np.zeros((rows, last - first))
        for c in range(first, last):
            _, q = qdq(w[:, c].astype(F32), scales, zeros, F32(15))
            out[:, c] = q
            err = (w[:, c] - q.astype(np.float64)) / u[c, c]
            w[:, c:last] -= np.outer(err, u[c, c:last])
            errors[:, c - first] = err
        w[:, last:] -= errors @ u[first:last, last:]
    return out


def check_gptq():
    rng = np.random.default_rng(3)
    rows, cols, tokens = 24, 96, 400
    mixing = rng.standard_normal((16, cols)) / 4
    x = (rng.standard_normal((tokens, 16)) @ mixing).astype(F32)
    x[:, 7] = 0  # a dead column
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(F32)
    w.tofile(os.path.join(WORK, "w.bin"))
    x.tofile(os.path.join(WORK, "x.bin"))
    out_path = os.path.join(WORK, "g.bin")
    run("gptq", 4, 0, 32, rows, cols, tokens, os.path.join(WORK, "w.bin"), os.path.join(WORK, "x.bin"), out_path)
    got_out, _, got_s, got_z = read_result(out_path, rows * cols, rows)
    expected = ref_gptq(w, x, got_s, got_z, 32)
    mismatched = np.mean(np.abs(got_out.reshape(rows, cols) - expected) > 1e-6)
    # A rounding tie broken differently by summation order flips one code.
    if mismatched > 0.005:
        fail("gptq_numpy", f"{mismatched:.2%} of the weights differ from numpy GPTQ")
    print(f"PASS gptq_numpy ({mismatched:.2%} differ)")


def ref_lac(x, w, group, f_max, f_min):
    """Straight-through LAC loss and gradients in float64 numpy."""
    rows, cols = x.shape
    span = cols if group == 0 else group
    g = x.astype(np.float64).reshape(rows, cols // span, span)
    xmax, xmin = g.max(-1), g.min(-1)
    if group == 0:
        xmax, xmin = np.maximum(xmax, 0), np.minimum(xmin, 0)
    hi, lo = xmax * f_max, xmin * f_min
    dmax, dmin = xmax / 15, -xmin / 15
    reset = (hi == 0) & (lo == 0)
    hi, lo = np.where(reset, 1.0, hi), np.where(reset, -1.0, lo)
    s = (hi - lo) / 15
    eps = 1e-8 if group == 0 else 1e-6
    small = s < eps
    s = np.where(small, eps, s)
    dmax = np.where(reset | small, 0, dmax)
    dmin = np.where(reset | small, 0, dmin)
    z = np.rint(-lo / s)
    level = np.rint(g / s[..., None]) + z[..., None]
    outside = (level < 0) | (level > 15)
    clamped = np.clip(level, 0, 15)
    d_scale = np.where(outside, clamped - z[..., None], clamped - z[..., None] - g / s[..., None])
    xq = (s[..., None] * (clamped - z[..., None])).reshape(rows, cols)
    residual = (xq - x) @ w.T.astype(np.float64)
    loss = np.mean(residual ** 2)
    d_xq = (2.0 / residual.size) * residual @ w.astype(np.float64)
    d_s = (d_xq.reshape(g.shape) * d_scale).sum(-1)
    return loss, (d_s * dmax).sum(0), (d_s * dmin).sum(0)


def check_lac():
    rng = np.random.default_rng(4)
    rows, cols, out = 300, 32, 12
    x = rng.standard_t(3, (rows, cols)).astype(F32)
    x[7] = 0
    w = (rng.standard_normal((out, cols)) * 0.1).astype(F32)
    x.tofile(os.path.join(WORK, "lx.bin"))
    w.tofile(os.path.join(WORK, "lw.bin"))
    for group in (0, 8):
        result = subprocess.run([DRIVER, "lac-loss", str(group), str(rows), str(out), str(cols), "0.9", "0.8",
                                 os.path.join(WORK, "lx.bin"), os.path.join(WORK, "lw.bin")],
                                check=True, capture_output=True, text=True).stdout.split("\n")
        loss = float(result[0].split()[1])
        grads = np.array([[float(v) for v in line.split()[2:]] for line in result[1:] if line])
        ref_loss, ref_max, ref_min = ref_lac(x, w, group, 0.9, 0.8)
        if not np.isclose(loss, ref_loss, rtol=1e-9):
            fail(f"lac_numpy_{group}", f"loss {loss} != {ref_loss}")
        if not np.allclose(grads[:, 0], ref_max, rtol=1e-7, atol=1e-12) or \
                not np.allclose(grads[:, 1], ref_min, rtol=1e-7, atol=1e-12):
            fail(f"lac_numpy_{group}", f"gradients {grads.tolist()} != {ref_max}, {ref_min}")
        print(f"PASS lac_numpy_group_{group}")


check_hadamard()
check_quantizers()
check_gptq()
check_lac()
print("all numpy comparisons passed")
