#!/usr/bin/env python3
"""Helper for scripts/birdnet/install.sh: BirdNET V2.4 TFLite -> ONNX for birdsong.

Subcommands
  status   --dir DIR                      (stdlib only) exit 0 when DIR holds a
                                          complete install whose manifest matches
                                          the ONNX file, 1 otherwise
  convert  --tflite F --labels L --out-onnx TMP --out-manifest TMP ...
                                          convert, rewrite for tract-onnx, check
                                          parity against the TFLite interpreter,
                                          write the ONNX and the manifest

`convert` needs the venv made by install.sh (tensorflow, tf2onnx, onnx,
onnxruntime, numpy). Nothing here downloads anything.
"""
import argparse
import hashlib
import json
import os
import sys
import time

SAMPLE_RATE = 48000
SAMPLES = 144000          # 3 s at 48 kHz
N_CLASSES = 6522
EMB_DIM = 1024
TFL_LOGITS = "Identity"
TFL_EMBEDDING = "model/GLOBAL_AVG_POOL/Mean"
ONNX_OPSET = 13
TOL_LOGITS = 1e-3
TOL_EMBEDDING = 1e-4
ONNX_NAME = "birdnet_v2.4.onnx"


class Fail(Exception):
    """An error with a message meant for the user."""


# tf2onnx runs from_tflite with continue_on_error=True, so exceptions raised in a
# handler would be swallowed: the handler records what it did / what went wrong here.
_RFFT_DONE = []
_RFFT_ERRORS = []


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- status

def cmd_status(args):
    d = args.dir
    man = os.path.join(d, "manifest.json")
    onnx_path = os.path.join(d, ONNX_NAME)
    for p in (man, onnx_path, os.path.join(d, "labels.txt"), os.path.join(d, "LICENSE")):
        if not os.path.isfile(p):
            print("not installed: missing %s" % p)
            return 1
    try:
        with open(man) as f:
            m = json.load(f)
        want = m["onnx"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print("not installed: unreadable manifest %s (%s)" % (man, e))
        return 1
    got = sha256_file(onnx_path)
    if got != want:
        print("not installed: %s has sha256 %s, manifest says %s" % (onnx_path, got, want))
        return 1
    print("BirdNET V2.4 ONNX already installed in %s (sha256 %s matches manifest.json); nothing to do. "
          "Use --force to redo." % (d, got))
    return 0


# --------------------------------------------------------------------------- convert

def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import warnings
    warnings.filterwarnings("ignore")
    import logging
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)


# How the real part of the RFFT is computed (see rfft2d_real_handler):
#   "f64-factored" (default): two-stage (Cooley-Tukey N = N1*N2) real-part DFT in float64,
#                             cast back to float32. Matches TFLite (whose RFFT2D kernel
#                             works in double precision) to ~1e-5 on the logits.
#   "f32-matmul":             one MatMul with the float32 cosine matrix [N, N/2+1]. Simple,
#                             but float32 accumulation over N=2048 terms is not accurate
#                             enough: on a pure chirp the logits differ by ~3e-3.
DFT_MODE = "f64-factored"


def rfft2d_real_handler(ctx, node, name, args):
    """tf2onnx custom handler for RFFT2D (old-style API: func(ctx, node, name, args)).

    In BirdNET the RFFT2D output [B, F, 1, N/2+1] (complex64) is squeezed and then
    cast to float32, which keeps only the real part. So the FFT is replaced by the
    real part of the DFT, Re X[k] = sum_n x[n] cos(2*pi*n*k/N), computed with
    MatMuls against constant cosine/sine matrices; the result is float32 and the
    later Cast becomes a no-op.
    """
    try:
        _rfft2d_real(ctx, node, name)
        _RFFT_DONE.append(name)
    except Exception as e:  # noqa: BLE001  (re-raised after conversion)
        _RFFT_ERRORS.append("%s: %s" % (name, e))
        raise


def _split_factor(n):
    """n = n1 * n2 with n1 the largest divisor <= sqrt(n)."""
    n1 = int(n ** 0.5)
    while n1 > 1 and n % n1:
        n1 -= 1
    return n1, n // n1


def dft_real_factored_np(x, n1, n2):
    """numpy reference of the ONNX subgraph built in _dft_real_factored (float64)."""
    import numpy as np
    mats = _factored_constants(n1, n2)
    xr = x.reshape(x.shape[:-1] + (n1, n2))
    yr, p = mats["ac"] @ xr, mats["as"] @ xr
    zr = yr * mats["cos"] - p * mats["sin"]
    zin = yr * mats["sin"] + p * mats["cos"]
    xk = np.concatenate([zr, zin], -1) @ mats["w2"]
    xk = np.swapaxes(xk, -1, -2).reshape(x.shape[:-1] + (-1,))
    return xk[..., : n1 * n2 // 2 + 1]


def _factored_constants(n1, n2):
    """Constants for X[k1 + n1*k2] = sum_{i2} W_N^{i2*k1} W_{n2}^{i2*k2} sum_{i1} x[n2*i1 + i2] W_{n1}^{i1*k1},
    W_M = exp(-2*pi*i/M). Stage 1 (sum over i1) is a left MatMul with cos/sin [n1, n1];
    the twiddles are [n1(k1), n2(i2)]; stage 2 keeps only the real part, for
    k2 = 0..n2/2, as one MatMul of [Zr, -Zi] with [C2; -S2]."""
    import numpy as np
    n = n1 * n2
    i1 = np.arange(n1)
    ang1 = 2 * np.pi * (np.outer(i1, i1) % n1) / n1
    tw = 2 * np.pi * (np.outer(i1, np.arange(n2)) % n) / n
    i2, k2 = np.arange(n2), np.arange(n2 // 2 + 1)
    ang2 = 2 * np.pi * (np.outer(i2, k2) % n2) / n2
    return {"ac": np.cos(ang1), "as": np.sin(ang1), "cos": np.cos(tw), "sin": np.sin(tw),
            "w2": np.concatenate([np.cos(ang2), -np.sin(ang2)], 0)}


def _dft_real_factored(ctx, name, x, n, out, out_shape):
    """Build: Cast(f64) -> Reshape[.., n1, n2] -> stage 1 -> twiddle -> stage 2 -> Transpose ->
    Reshape -> Slice[:n/2+1] -> Cast(f32). Input [B, F, 1, n] float32, output [B, F, 1, n/2+1] float32."""
    import numpy as np
    from onnx import TensorProto
    from tf2onnx import utils
    n1, n2 = _split_factor(n)
    mats = _factored_constants(n1, n2)
    D, F = TensorProto.DOUBLE, TensorProto.FLOAT
    pre = name + "_dft"

    def const(tag, value):
        return ctx.make_const(utils.make_name("%s_%s" % (pre, tag)), value).output[0]

    def node(op, inputs, dtype=D, **attr):
        return ctx.make_node(op, inputs, attr=attr, name=utils.make_name("%s_%s" % (pre, op)),
                             dtypes=[dtype]).output[0]

    x64 = node("Cast", [x], to=D)
    xr = node("Reshape", [x64, const("shape_in", np.array([0, 0, 0, n1, n2], np.int64))])
    yr = node("MatMul", [const("ac", mats["ac"]), xr])          # [.., n1(k1), n2(i2)]
    p = node("MatMul", [const("as", mats["as"]), xr])           # = -Im
    cos, sin = const("tw_cos", mats["cos"]), const("tw_sin", mats["sin"])
    zr = node("Sub", [node("Mul", [yr, cos]), node("Mul", [p, sin])])
    zin = node("Add", [node("Mul", [yr, sin]), node("Mul", [p, cos])])   # = -Im(Z)
    xk = node("MatMul", [node("Concat", [zr, zin], axis=-1), const("w2", mats["w2"])])  # [.., k1, k2]
    xk = node("Transpose", [xk], perm=[0, 1, 2, 4, 3])                    # [.., k2, k1]
    xk = node("Reshape", [xk, const("shape_out", np.array([0, 0, 0, n1 * (n2 // 2 + 1)], np.int64))])
    xk = node("Slice", [xk, const("starts", np.array([0], np.int64)),
                        const("ends", np.array([n // 2 + 1], np.int64)), const("axes", np.array([3], np.int64))])
    ctx.make_node("Cast", [xk], attr={"to": F}, outputs=[out], name=name, shapes=[out_shape], dtypes=[F])


def _rfft2d_real(ctx, node, name):
    import numpy as np
    from onnx import TensorProto
    from tf2onnx import utils

    x = node.input[0]
    fft_len = node.inputs[1].get_tensor_value(as_list=True)
    if len(fft_len) != 2 or fft_len[0] != 1:
        raise Fail("RFFT2D %s: unexpected fft_length %r (expected [1, N])" % (name, fft_len))
    n = int(fft_len[1])
    in_shape = ctx.get_shape(x)
    if not in_shape or len(in_shape) != 4 or in_shape[-1] != n or in_shape[-2] != 1:
        raise Fail("RFFT2D %s: input shape %r does not match fft_length %r" % (name, in_shape, fft_len))
    # Only valid if every consumer path drops the imaginary part: Squeeze* then Cast(to float).
    frontier = [node.output[0]]
    while frontier:
        t = frontier.pop()
        for c in ctx.find_output_consumers(t):
            if c.type == "Squeeze":
                frontier.append(c.output[0])
            elif c.type == "Cast" and c.get_attr_value("to") == TensorProto.FLOAT:
                pass
            else:
                raise Fail("RFFT2D %s: consumer %s (%s) may use the imaginary part; the real-part "
                           "replacement would be wrong" % (name, c.name, c.type))
    out = node.output[0]
    shape = ctx.get_shape(out)
    ctx.remove_node(name)
    if DFT_MODE == "f32-matmul":
        t = np.arange(n, dtype=np.int64)
        k = np.arange(n // 2 + 1, dtype=np.int64)
        mat = np.cos(2.0 * np.pi * (np.outer(t, k) % n) / n).astype(np.float32)   # [N, N/2+1]
        const = ctx.make_const(utils.make_name(name + "_dft_real"), mat)
        ctx.make_node("MatMul", [x, const.output[0]], outputs=[out], name=name,
                      shapes=[shape], dtypes=[TensorProto.FLOAT])
    elif DFT_MODE == "f64-factored":
        _dft_real_factored(ctx, name, x, n, out, shape)
    else:
        raise Fail("unknown DFT mode %r" % DFT_MODE)
    # everything between here and the Cast is float now
    frontier = [out]
    while frontier:
        t_ = frontier.pop()
        for c in ctx.find_output_consumers(t_):
            if c.type == "Squeeze":
                ctx.set_dtype(c.output[0], TensorProto.FLOAT)
                frontier.append(c.output[0])


def tflite_to_onnx(tflite_path):
    import tf2onnx
    model, _ = tf2onnx.convert.from_tflite(
        tflite_path, opset=ONNX_OPSET,
        output_names=[TFL_LOGITS, TFL_EMBEDDING],
        custom_op_handlers={"RFFT2D": (rfft2d_real_handler, [])})
    return model


def _rename_tensor(graph, old, new):
    for n in graph.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = new
        for i, x in enumerate(n.output):
            if x == old:
                n.output[i] = new
    for coll in (graph.output, graph.input, graph.value_info):
        for v in coll:
            if v.name == old:
                v.name = new


def _static_shapes(model):
    """tensor name -> list of dims (int or None) from ONNX shape inference."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = v.type.tensor_type
        if tt.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in model.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def _const_value(graph, name):
    import onnx
    from onnx import numpy_helper
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(onnx.helper.get_attribute_value(n.attribute[0]))
    return None


def _seq_lens_is_full_length(graph, rs, time_axis, length):
    """Structural proof that sequence_lens == the full length of the time axis for
    every batch entry: seq = Expand(Gather(Shape(P), [k]), ...) with data = P
    (k == time_axis) or data = Transpose(P, perm) with perm[time_axis] == k."""
    prod = {o: n for n in graph.node for o in n.output}
    seq = prod.get(rs.input[1])
    if seq is None or seq.op_type != "Expand":
        return False
    g = prod.get(seq.input[0])
    if g is None or g.op_type != "Gather":
        return False
    idx = _const_value(graph, g.input[1])
    if idx is None or idx.size != 1:
        return False
    sh = prod.get(g.input[0])
    if sh is None or sh.op_type != "Shape" or any(a.name in ("start", "end") for a in sh.attribute):
        return False
    p = sh.input[0]
    k = int(idx.ravel()[0])
    data = rs.input[0]
    if data == p:
        return k == time_axis
    dp = prod.get(data)
    if dp is not None and dp.op_type == "Transpose" and dp.input[0] == p:
        import onnx
        perm = [list(onnx.helper.get_attribute_value(a)) for a in dp.attribute if a.name == "perm"]
        return bool(perm) and perm[0][time_axis] == k
    return False


def _measure_numeric(model, rs_nodes):
    """Fallback: run onnxruntime for batch sizes 1 and 3 and read, for each
    ReverseSequence, its data shape and sequence_lens. Returns {name: (length, seq_full)}."""
    import copy
    import numpy as np
    import onnx
    import onnxruntime as ort
    m = copy.deepcopy(model)
    names = []
    for rs in rs_nodes:
        m.graph.output.append(onnx.helper.make_tensor_value_info(rs.input[0], onnx.TensorProto.FLOAT, None))
        m.graph.output.append(onnx.helper.make_tensor_value_info(rs.input[1], onnx.TensorProto.INT64, None))
        names += [rs.input[0], rs.input[1]]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    rng = np.random.default_rng(7)
    seen = {}
    for b in (1, 3):
        outs = sess.run(names, {inp: rng.standard_normal((b, SAMPLES)).astype(np.float32)})
        for i, rs in enumerate(rs_nodes):
            data, seq = outs[2 * i], outs[2 * i + 1]
            t = _attr(rs, "time_axis", 0)
            length = int(data.shape[t])
            full = bool(np.all(seq == length))
            prev = seen.get(rs.name)
            if prev is not None and prev[0] != length:
                length, full = -1, False        # depends on the batch size: not static
            seen[rs.name] = (length, full and (prev is None or prev[1]))
    return seen


def _attr(node, name, default):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _static_len(graph, shapes, tfl_sigs, data, axis):
    """Static length of `data` along `axis`: from ONNX shape inference, else from the
    TFLite shape signature of the tensor (or of the input of the Transpose that made it)."""
    shp = shapes.get(data)
    if shp and len(shp) > axis and shp[axis]:
        return int(shp[axis]), "onnx shape inference"
    sig = tfl_sigs.get(data)
    if sig and len(sig) > axis and sig[axis] > 0:
        return int(sig[axis]), "tflite shape signature of %s" % data
    prod = {o: n for n in graph.node for o in n.output}
    dp = prod.get(data)
    if dp is not None and dp.op_type == "Transpose" and dp.input[0] in tfl_sigs:
        perm = list(_attr(dp, "perm", []))
        sig = tfl_sigs[dp.input[0]]
        if perm and len(sig) == len(perm) and sig[perm[axis]] > 0:
            return int(sig[perm[axis]]), "tflite shape signature of %s, dim %d" % (dp.input[0], perm[axis])
    return None, None


def rewrite_reverse_sequence(model, tfl_sigs):
    """Replace ReverseSequence (unsupported by tract-onnx 0.23) by Gather with constant
    reversed indices along time_axis. Equivalent only when the time axis has a static
    length L and every sequence length equals L; both are checked (structurally, with
    an onnxruntime measurement as fallback), otherwise this fails."""
    import re
    import numpy as np
    from onnx import helper, numpy_helper
    graph = model.graph
    rs_nodes = [n for n in graph.node if n.op_type == "ReverseSequence"]
    if not rs_nodes:
        return []
    shapes = _static_shapes(model)
    plan, unsure = [], []
    for rs in rs_nodes:
        batch_axis, time_axis = int(_attr(rs, "batch_axis", 1)), int(_attr(rs, "time_axis", 0))
        length, how = _static_len(graph, shapes, tfl_sigs, rs.input[0], time_axis)
        proved = length is not None and _seq_lens_is_full_length(graph, rs, time_axis, length)
        plan.append({"node": re.sub(r"__\d+", "", rs.name), "batch_axis": batch_axis, "time_axis": time_axis, "length": length,
                     "length_from": how, "full_length_check": "structural" if proved else None})
        if not proved:
            unsure.append(rs)
    if unsure:
        measured = {re.sub(r"__\d+", "", k): v for k, v in _measure_numeric(model, unsure).items()}
        for p in plan:
            if p["node"] in measured:
                length, full = measured[p["node"]]
                if length < 0 or (p["length"] is not None and p["length"] != length):
                    raise Fail("ReverseSequence %s: the time axis length is not static; cannot rewrite "
                               "into a Gather with constant indices" % p["node"])
                if not full:
                    raise Fail("ReverseSequence %s: sequence_lens are not all the full length %d, so a "
                               "Gather with reversed indices would NOT be equivalent; refusing" % (p["node"], length))
                p["length"] = length
                p["length_from"] = p["length_from"] or "onnxruntime measurement (batch 1 and 3)"
                p["full_length_check"] = "onnxruntime measurement (batch 1 and 3)"
    for rs, p in zip(rs_nodes, plan):
        length, time_axis = p["length"], p["time_axis"]
        idx_name = rs.name + "_reversed_indices"
        graph.initializer.append(numpy_helper.from_array(np.arange(length - 1, -1, -1, dtype=np.int64), idx_name))
        gather = helper.make_node("Gather", [rs.input[0], idx_name], [rs.output[0]],
                                  name=rs.name + "_as_Gather", axis=time_axis)
        pos = list(graph.node).index(rs)
        graph.node.remove(rs)
        graph.node.insert(pos, gather)
    return plan


def tflite_shape_signatures(tflite_path):
    import tensorflow as tf
    interp = tf.lite.Interpreter(
        model_path=tflite_path,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return {d["name"]: [int(v) for v in d["shape_signature"]] for d in interp.get_tensor_details()}


def prune(model):
    """Drop nodes and initializers that no graph output depends on."""
    graph = model.graph
    prod = {o: n for n in graph.node for o in n.output}
    need, stack, keep = set(), [o.name for o in graph.output], set()
    while stack:
        t = stack.pop()
        if t in need:
            continue
        need.add(t)
        n = prod.get(t)
        if n is not None and id(n) not in keep:
            keep.add(id(n))
            stack.extend(x for x in n.input if x)
    dead = [n for n in graph.node if id(n) not in keep]
    for n in dead:
        graph.node.remove(n)
    dead_init = [i for i in graph.initializer if i.name not in need]
    for i in dead_init:
        graph.initializer.remove(i)
    return len(dead), len(dead_init)


def canonicalize(model):
    """tf2onnx's output is not deterministic (generated names, node order, which of
    several merged duplicates keeps its name). Make the file reproducible: order nodes
    by a post-order walk from the outputs (inputs in order), initializers by first use,
    and name them structurally: node n<k>_<OpType>, its output t<k>, initializer c<i>.
    Graph input/output names are kept."""
    graph = model.graph

    prod = {o: n for n in graph.node for o in n.output}
    order, done = [], set()
    for out in [o.name for o in graph.output]:
        stack = [(prod[out], 0)] if out in prod else []
        while stack:
            node, i = stack.pop()
            if id(node) in done:
                continue
            if i < len(node.input):
                stack.append((node, i + 1))
                x = node.input[i]
                if x in prod and id(prod[x]) not in done:
                    stack.append((prod[x], 0))
                continue
            done.add(id(node))
            order.append(node)
    # Names are structural: tf2onnx merges identical nodes/constants and which of the
    # original names survives varies from run to run, so original names cannot be kept.
    fixed = {v.name for v in graph.input} | {v.name for v in graph.output}
    rename = {n: n for n in fixed}
    inits = {i.name: i for i in graph.initializer}
    init_order = []
    for k, node in enumerate(order):
        for x in node.input:
            if x and x not in rename:
                if x not in inits:
                    raise Fail("canonicalize: tensor %s has no producer" % x)
                rename[x] = "c%d" % len(init_order)
                init_order.append(x)
        for j, x in enumerate(node.output):
            if x and x not in rename:
                rename[x] = "t%d" % k if len(node.output) == 1 else "t%d_%d" % (k, j)
    new_nodes = []
    for k, node in enumerate(order):
        node.name = "n%d_%s" % (k, node.op_type)
        for i, x in enumerate(node.input):
            if x:
                node.input[i] = rename[x]
        for i, x in enumerate(node.output):
            if x:
                node.output[i] = rename[x]
        new_nodes.append(node)
    new_inits = []
    for x in init_order:
        init = inits[x]
        init.name = rename[x]
        new_inits.append(init)
    nodes_copy = [type(n)() for n in new_nodes]
    for c, n in zip(nodes_copy, new_nodes):
        c.CopyFrom(n)
    inits_copy = [type(i)() for i in new_inits]
    for c, i in zip(inits_copy, new_inits):
        c.CopyFrom(i)
    del graph.node[:]
    graph.node.extend(nodes_copy)
    del graph.initializer[:]
    graph.initializer.extend(inits_copy)
    del graph.value_info[:]
    return model


def finalize(model):
    import onnx
    graph = model.graph
    outs = [o.name for o in graph.output]
    if outs != [TFL_LOGITS, TFL_EMBEDDING]:
        raise Fail("unexpected ONNX outputs %r" % outs)
    _rename_tensor(graph, TFL_LOGITS, "logits")
    _rename_tensor(graph, TFL_EMBEDDING, "embedding")
    del graph.value_info[:]
    if len(graph.input) != 1:
        raise Fail("expected one model input, got %r" % [i.name for i in graph.input])
    # symbolic batch dimension on the input and both outputs
    for v, rest in [(graph.input[0], [SAMPLES]), (graph.output[0], [N_CLASSES]), (graph.output[1], [EMB_DIM])]:
        dims = v.type.tensor_type.shape.dim
        if [d.dim_value for d in dims[1:]] != rest:
            raise Fail("%s has shape %s, expected [batch, %s]" % (v.name, dims, rest))
        dims[0].Clear()
        dims[0].dim_param = "batch"
    used_domains = {n.domain for n in graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used_domains]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.producer_name = "birdsong scripts/birdnet/convert.py (tf2onnx)"
    model.doc_string = ("BirdNET V2.4 (BirdNET_GLOBAL_6K_V2.4_Model_FP32), converted from TFLite. "
                        "Licence: CC BY-NC-SA 4.0, by the K. Lisa Yang Center for Conservation "
                        "Bioacoustics (Cornell Lab of Ornithology) and Chemnitz University of Technology. "
                        "Input: [batch, 144000] float32, 3 s mono at 48 kHz. Outputs: logits [batch, 6522] "
                        "(apply sigmoid for confidences), embedding [batch, 1024].")
    onnx.checker.check_model(model, full_check=True)
    return model


def test_inputs():
    import numpy as np
    t = np.arange(SAMPLES, dtype=np.float64) / SAMPLE_RATE
    f0, f1, dur = 500.0, 12000.0, SAMPLES / SAMPLE_RATE
    k = np.log(f1 / f0) / dur
    chirp = 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k) * np.hanning(SAMPLES)
    cases = []
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        cases.append(("noise_seed%d" % seed, rng.standard_normal((1, SAMPLES)) * (0.05 * (seed + 1))))
    cases.append(("chirp_500_12000Hz", chirp[None, :]))
    rng = np.random.default_rng(3)
    tone = 0.3 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(SAMPLES)
    batch = np.stack([cases[0][1][0], chirp, tone])
    cases.append(("batch3[noise0,chirp,tone+noise]", batch))
    return [(n, x.astype(np.float32)) for n, x in cases]


def run_tflite(tflite_path, x):
    import tensorflow as tf
    # builtin kernels, no XNNPACK delegate: XNNPACK would hide intermediate tensors
    interp = tf.lite.Interpreter(
        model_path=tflite_path,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(by_name[TFL_LOGITS]).copy(), interp.get_tensor(by_name[TFL_EMBEDDING]).copy()


def parity(tflite_path, model_bytes):
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    rows, worst_l, worst_e = [], 0.0, 0.0
    singles = {}
    for name, x in test_inputs():
        tl, te = run_tflite(tflite_path, x)
        ol, oe = sess.run(["logits", "embedding"], {inp: x})
        if ol.shape != tl.shape or oe.shape != te.shape:
            raise Fail("%s: shape mismatch onnx %s/%s vs tflite %s/%s" % (name, ol.shape, oe.shape, tl.shape, te.shape))
        dl = float(np.max(np.abs(ol - tl)))
        de = float(np.max(np.abs(oe - te)))
        top_same = bool(np.all(np.argmax(ol, 1) == np.argmax(tl, 1)))
        rows.append({"case": name, "batch": int(x.shape[0]), "max_abs_diff_logits": dl,
                     "max_abs_diff_embedding": de, "logits_abs_max": float(np.max(np.abs(tl))),
                     "embedding_abs_max": float(np.max(np.abs(te))), "top1_equal": top_same})
        print("  parity %-34s batch=%d  logits max|diff|=%.3g  embedding max|diff|=%.3g  top1 equal=%s"
              % (name, x.shape[0], dl, de, top_same), flush=True)
        worst_l, worst_e = max(worst_l, dl), max(worst_e, de)
        if x.shape[0] == 1:
            singles[name] = (ol, oe)
    # batch rows must equal the single-window results (batch independence)
    b_l, b_e = sess.run(["logits", "embedding"], {inp: test_inputs()[-1][1]})
    dbl = float(np.max(np.abs(b_l[0] - singles["noise_seed0"][0][0])))
    dbe = float(np.max(np.abs(b_e[0] - singles["noise_seed0"][1][0])))
    print("  onnx batch row 0 vs single noise_seed0: logits %.3g, embedding %.3g" % (dbl, dbe), flush=True)
    ok = worst_l <= TOL_LOGITS and worst_e <= TOL_EMBEDDING and dbl <= TOL_LOGITS and dbe <= TOL_EMBEDDING
    return {"cases": rows, "max_abs_diff_logits": worst_l, "max_abs_diff_embedding": worst_e,
            "batch_vs_single_onnx": {"logits": dbl, "embedding": dbe},
            "tolerance": {"logits": TOL_LOGITS, "embedding": TOL_EMBEDDING},
            "reference": "tf.lite.Interpreter builtin kernels (no XNNPACK), preserve_all_tensors",
            "passed": ok}


def cmd_convert(args):
    global DFT_MODE
    DFT_MODE = args.dft
    _quiet_tf()
    t0 = time.time()
    import numpy as np
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    if DFT_MODE == "f64-factored":   # self-test of the factored real-DFT formula
        rng = np.random.default_rng(0)
        for n in (1024, 2048):
            x = rng.standard_normal((2, 1, n))
            err = float(np.max(np.abs(dft_real_factored_np(x, *_split_factor(n)) - np.fft.rfft(x).real)))
            if err > 1e-9:
                raise Fail("factored DFT self-test failed for N=%d (max error %g)" % (n, err))
    print("converting %s with tf2onnx %s (opset %d, RFFT2D -> %s real-part DFT) ..."
          % (args.tflite, tf2onnx.__version__, ONNX_OPSET, DFT_MODE), flush=True)
    model = tflite_to_onnx(args.tflite)
    if _RFFT_ERRORS:
        raise Fail("RFFT2D replacement failed: %s" % "; ".join(_RFFT_ERRORS))
    n_rfft = len(_RFFT_DONE)
    if n_rfft != 2:
        raise Fail("expected 2 RFFT2D ops replaced, got %d" % n_rfft)
    bad = sorted({"%s:%s" % (n.domain, n.op_type) for n in model.graph.node
                  if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type)})
    if bad:
        raise Fail("conversion left ops that are not standard ONNX: %s; refusing" % bad)
    rs_report = rewrite_reverse_sequence(model, tflite_shape_signatures(args.tflite))
    for r in rs_report:
        print("  ReverseSequence %s: batch_axis=%d time_axis=%d, length %d (%s), sequence_lens == full length "
              "(%s) -> Gather(axis=%d, indices=[%d..0])"
              % (r["node"], r["batch_axis"], r["time_axis"], r["length"], r["length_from"], r["full_length_check"],
                 r["time_axis"], r["length"] - 1), flush=True)
    dn, di = prune(model)
    model = finalize(canonicalize(model))
    ops = sorted({n.op_type for n in model.graph.node})
    if "ReverseSequence" in ops:
        raise Fail("ReverseSequence still present after rewrite")
    print("  op types (%d): %s" % (len(ops), " ".join(ops)), flush=True)
    inferred = onnx.shape_inference.infer_shapes(model)
    f64_tensors = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE}
    f64_ops = sorted({n.op_type for n in model.graph.node if any(o in f64_tensors for o in n.output)})
    if f64_ops:
        print("  op types with float64 outputs (the RFFT replacement): %s" % " ".join(f64_ops), flush=True)
    data = model.SerializeToString()
    print("checking numerical parity against the TFLite interpreter ...", flush=True)
    par = parity(args.tflite, data)
    print("  worst: logits %.3g (tol %g), embedding %.3g (tol %g)"
          % (par["max_abs_diff_logits"], TOL_LOGITS, par["max_abs_diff_embedding"], TOL_EMBEDDING), flush=True)
    if not par["passed"]:
        raise Fail("ONNX output differs from TFLite beyond tolerance (logits %.3g > %g or embedding %.3g > %g); "
                   "not installing" % (par["max_abs_diff_logits"], TOL_LOGITS, par["max_abs_diff_embedding"], TOL_EMBEDDING))
    with open(args.out_onnx, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(args.labels, encoding="utf-8") as f:
        n_labels = len(f.read().splitlines())
    manifest = {
        "model": "BirdNET V2.4 GLOBAL 6K (FP32) audio model",
        "license": "CC BY-NC-SA 4.0 (Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International); "
                   "BirdNET by the K. Lisa Yang Center for Conservation Bioacoustics (Cornell Lab of Ornithology) "
                   "and Chemnitz University of Technology; see LICENSE",
        "source": json.loads(args.source_json),
        "tflite": {"file": os.path.basename(args.tflite_name or args.tflite), "sha256": args.tflite_sha256,
                   "bytes": os.path.getsize(args.tflite)},
        "onnx": {"file": ONNX_NAME, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                 "opset": ONNX_OPSET, "op_types": ops, "float64_op_types": f64_ops,
                 "rewrites": {"RFFT2D": "%d nodes replaced by the real part of the DFT, mode %s: %s" % (
                                  n_rfft, DFT_MODE, "float64 two-stage (N = N1*N2) MatMuls with constant cos/sin "
                                  "matrices, cast back to float32" if DFT_MODE == "f64-factored" else
                                  "float32 MatMul with the constant cosine matrix [N, N/2+1]"),
                              "ReverseSequence": [dict(r, replaced_by="Gather") for r in rs_report],
                              "pruned_nodes": dn, "pruned_initializers": di}},
        "input": {"name": model.graph.input[0].name, "dtype": "float32", "shape": ["batch", SAMPLES],
                  "sample_rate": SAMPLE_RATE, "samples": SAMPLES, "seconds": SAMPLES / SAMPLE_RATE,
                  "note": "mono; the model min-max normalises each window itself"},
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", N_CLASSES],
                     "note": "raw scores; BirdNET confidence = sigmoid(sensitivity * logit), sensitivity 1.0 by default"},
                    {"name": "embedding", "dtype": "float32", "shape": ["batch", EMB_DIM],
                     "note": "tensor model/GLOBAL_AVG_POOL/Mean"}],
        "labels": {"file": "labels.txt", "count": n_labels, "format": "Scientific name_Common name, one per line, "
                   "in logit order", "sha256": sha256_file(args.labels)},
        "parity": par,
        "tools": {"python": sys.version.split()[0], "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "convert_seconds": round(time.time() - t0, 1),
    }
    if n_labels != N_CLASSES:
        raise Fail("labels file has %d lines, expected %d" % (n_labels, N_CLASSES))
    with open(args.out_manifest, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print("conversion and parity check done in %.0f s" % (time.time() - t0), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status")
    s.add_argument("--dir", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--tflite", required=True)
    c.add_argument("--tflite-name", help="original file name, for the manifest")
    c.add_argument("--tflite-sha256", required=True)
    c.add_argument("--labels", required=True)
    c.add_argument("--source-json", required=True)
    c.add_argument("--out-onnx", required=True)
    c.add_argument("--out-manifest", required=True)
    c.add_argument("--dft", choices=["f64-factored", "f32-matmul"], default=DFT_MODE,
                   help="how the real part of the RFFT is computed (default %(default)s)")
    args = ap.parse_args()
    try:
        return cmd_status(args) if args.cmd == "status" else cmd_convert(args)
    except Fail as e:
        print("ERROR: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
