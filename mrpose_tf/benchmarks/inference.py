"""inference: batch-1 latency and batch-16 throughput of every runtime a model is served in.

Ours: Keras (a tf.function), the SavedModel (TF Serving's graph) in float32 and bfloat16,
TFLite fp32 / fp16 / int8 (LiteRT with XNNPACK) and the OpenVINO IR (the device's default
precision). The peers (:mod:`mrpose_tf.benchmarks.peers`, where installed): the same network
in PyTorch, and exported to ONNX under ONNX Runtime and OpenVINO. All measured in the same
run. Random weights with BatchNorm statistics set on the crops (a trained network's value
ranges, for int8). The floor of a TFLite model is its multiply-accumulates at the machine's
XNNPACK ceiling. The targets (issue 22): our fastest float path at most 0.9x the fastest
float peer, our TFLite int8 at most 0.8x the fastest int8 peer.

``--json=OUT`` writes {'latency_ms': {arch: {runtime: ms}}, 'latency_range_ms': {arch:
{runtime: [min, max]}}, 'throughput_b16': {arch: {runtime: img/s}}, 'xnnpack_partitions',
'floor_ms', 'xnnpack_macs_per_s', 'openvino_int8_macs_per_s' (the same convolutions in
OpenVINO int8; None without the int8 peer), 'gemm_macs_per_s', 'openvino_precision': {arch:
{runtime: 'f32'|'bf16'|...}}, 'targets': {arch: {'float_ratio', 'int8_ratio', ...}},
'versions', 'threads', 'runs'}.
"""
import json
import os
import tempfile

from absl import flags

from mrpose_tf.benchmarks.common import (ARCHS, INPUT_SIZE, calibrate_batch_norm, define_list,
                                         gemm_rate, model_macs, openvino_int8_rate,
                                         xnnpack_rate)
from mrpose_tf.benchmarks.peers import PEERS, installed, peer_runners
from mrpose_tf.benchmarks.timing import median, run_times, timed

OURS = ("keras", "saved_model", "saved_model_bf16", "tflite_fp32", "tflite_fp16", "tflite_int8",
        "openvino", "openvino_native")
RUNTIMES = OURS + PEERS
# openvino_native: our IR with the transposed convs as they are, to compare with the exported
# (sub-pixel) one.
OPTIONAL = ("openvino_native",)
INT8 = ("tflite_int8", "onnx_ort_int8", "onnx_ov_int8")


def default_runtimes():
    """Every runtime but the optional ones; the bfloat16 SavedModel only on CPUs with native
    bfloat16 (emulated elsewhere, several times slower than float32)."""
    from mrpose_tf.training.strategy import cpu_has_native_bfloat16

    skipped = OPTIONAL + (() if cpu_has_native_bfloat16() else ("saved_model_bf16",))
    return [r for r in RUNTIMES if r not in skipped]


def _runners(arch, args, workdir):
    """{runtime: (batch-1 fn, batch-16 fn)} for one architecture (random weights).

    TFLite runners also get ``xnnpack_partitions`` (attribute of the batch-1 fn): the number
    of XNNPACK delegate partitions (1: the whole graph runs in XNNPACK); OpenVINO ones
    ``precision``, the inference precision the device chose. The peers get the same crops
    (:func:`mrpose_tf.benchmarks.peers.peer_runners`); returns (runners, peer notes).
    """
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.config import base_config
    from mrpose_tf.export import export_saved_model
    from mrpose_tf.export.exporter import bfloat16_model
    from mrpose_tf.export.openvino import compile_openvino, convert_openvino, run_openvino
    from mrpose_tf.export.tflite import (convert_all, convert_pose_model, delegation,
                                         litert_interpreter, run_tflite)
    from mrpose_tf.keypoints import COCO
    from mrpose_tf.models import build_model

    rng = np.random.default_rng(0)
    one = rng.normal(0, 60, (1,) + INPUT_SIZE + (3,)).astype(np.float32)
    sixteen = rng.normal(0, 60, (16,) + INPUT_SIZE + (3,)).astype(np.float32)
    model = build_model(arch, "resnet50", 17, INPUT_SIZE, backbone_weights=None)
    calibrate_batch_norm(model, sixteen[:4])
    graph = tf.function(lambda x: model(x, training=False))
    runners = {"keras": (lambda: graph(one).numpy(), lambda: graph(sixteen).numpy())}
    config = base_config()
    config.model.input_size = INPUT_SIZE
    for name, form in (("saved_model", model), ("saved_model_bf16", bfloat16_model(model))):
        if name in args.runtimes:
            serving = tf.saved_model.load(export_saved_model(
                form, config, COCO, os.path.join(workdir, arch, name))).signatures[
                    "heatmaps_preprocessed"]
            runners[name] = (lambda s=serving: s(image=tf.constant(one)),
                             lambda s=serving: s(image=tf.constant(sixteen)))
    for name, subpixel in (("openvino", True), ("openvino_native", False)):
        if name in args.runtimes and installed(["openvino"]):
            compiled = compile_openvino(convert_openvino(model, subpixel), args.threads)
            runners[name] = (lambda c=compiled: run_openvino(c, one),
                             lambda c=compiled: run_openvino(c, sixteen))
            runners[name][0].precision = compiled.get_property(
                "INFERENCE_PRECISION_HINT").to_string()
    names = [r for r in args.runtimes if r.startswith("tflite_")]
    converted = convert_pose_model(model, [r.split("_")[1] for r in names],
                                   sixteen[:args.calibration_crops])
    flatbuffers = {name: converted[name.split("_")[1]] for name in names}
    if args.naive_tflite:  # the plain TRANSPOSE_CONV conversion, to compare
        flatbuffers["tflite_fp32_naive"] = convert_all(model, ["fp32"])["fp32"]
    for name, flatbuffer in flatbuffers.items():
        interpreter = litert_interpreter(flatbuffer, num_threads=args.threads)

        def batch1(interpreter=interpreter):
            run_tflite(interpreter, one)

        batch1.xnnpack_partitions = delegation(interpreter)[0]
        runners[name] = (batch1, lambda interpreter=interpreter: run_tflite(interpreter,
                                                                            sixteen))
    peers, notes = peer_runners(arch, args.runtimes, args.threads, one, sixteen, workdir,
                                args.calibration_crops)
    return {**runners, **peers}, notes


def _targets(latency):
    """{'float_ratio', 'int8_ratio', ...}: our fastest float path over the fastest float peer,
    our TFLite int8 over the fastest int8 peer (None where a side is missing), and whether
    each meets its target (0.9, 0.8)."""
    def fastest(names):
        times = {n: latency[n] for n in names if n in latency}
        return min(times.items(), key=lambda item: item[1]) if times else (None, None)

    ours = fastest([r for r in OURS if r not in INT8 + OPTIONAL])  # what the export ships
    peer = fastest([r for r in PEERS if r not in INT8])
    int8_peer = fastest([r for r in PEERS if r in INT8])
    out = {"our_float": ours[0], "peer_float": peer[0], "peer_int8": int8_peer[0]}
    out["float_ratio"] = ours[1] / peer[1] if ours[1] and peer[1] else None
    int8 = latency.get("tflite_int8")
    out["int8_ratio"] = int8 / int8_peer[1] if int8 and int8_peer[1] else None
    out["float_met"] = None if out["float_ratio"] is None else out["float_ratio"] <= 0.9
    out["int8_met"] = None if out["int8_ratio"] is None else out["int8_ratio"] <= 0.8
    return out


def run(args):
    import tensorflow as tf

    args.runtimes = args.runtimes or default_runtimes()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    latency, spread, throughput, partitions, floors, precision, targets = ({} for _ in range(7))
    versions = {"tensorflow": tf.__version__}
    gemm = gemm_rate(tf.float32)
    ceilings = {q: xnnpack_rate(q, args.threads) for q in ("fp32", "int8")
                if f"tflite_{q}" in args.runtimes}
    # The int8 peer's ceiling on the same convolutions: what bounds the int8 ratio here.
    openvino_int8 = openvino_int8_rate(args.threads) if (
        "onnx_ov_int8" in args.runtimes and installed(("openvino", "nncf"))) else None
    print(f"GEMM ceiling (2048^3 tf.matmul, float32): {gemm / 1e9:.0f} GMAC/s" + "".join(
        f", XNNPACK {q} {rate / 1e9:.0f} GMAC/s" for q, rate in ceilings.items()) + (
        f", OpenVINO int8 {openvino_int8 / 1e9:.0f} GMAC/s" if openvino_int8 else ""))
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs:
            # The float models run the Winograd form (fewer MACs), int8 the direct one.
            floors[arch] = {f"tflite_{q}": model_macs(arch, winograd=q == "fp32") / rate * 1e3
                            for q, rate in ceilings.items()}
            runners, notes = _runners(arch, args, workdir)
            versions.update(notes["versions"])
            precision[arch] = {**notes["precision"], **{
                name: fns[0].precision for name, fns in runners.items()
                if hasattr(fns[0], "precision")}}
            partitions[arch] = {name: fns[0].xnnpack_partitions for name, fns in runners.items()
                                if hasattr(fns[0], "xnnpack_partitions")}
            # Batch-1 runs in rounds over all runtimes, so that the host's drift hits all.
            times = {name: [] for name in runners}
            for round_index in range(args.rounds):
                for name, (batch1, _) in runners.items():
                    times[name] += run_times(batch1, -(-args.runs // args.rounds),
                                             args.warmup if round_index == 0 else 1)
            latency[arch] = {name: median(t) for name, t in times.items()}
            spread[arch] = {name: [min(t), max(t)] for name, t in times.items()}
            throughput[arch] = {}
            for name, (batch1, batch16) in runners.items():
                throughput[arch][name] = 16e3 / timed(batch16, max(3, args.runs // 4), 1)
                notes = f"   floor {floors[arch][name]:.1f} ms" if name in floors[arch] else ""
                if name in partitions[arch]:
                    notes += f"   XNNPACK partitions: {partitions[arch][name]}"
                if name in precision[arch]:
                    notes += f"   precision {precision[arch][name]}"
                low, high = spread[arch][name]
                print(f"{arch:<16}{name:<20}{latency[arch][name]:>10.1f} ms ({low:.1f}-{high:.1f})"
                      f"{throughput[arch][name]:>10.1f} img/s (batch 16){notes}", flush=True)
            targets[arch] = _targets(latency[arch])
            print(f"{arch}: " + ", ".join(
                f"{kind} ratio {targets[arch][kind + '_ratio']:.2f} (target {target})"
                for kind, target in (("float", 0.9), ("int8", 0.8))
                if targets[arch][kind + "_ratio"] is not None), flush=True)
    print(f"ResNet-50, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, random weights, {args.threads} threads; "
          f"latency = median (min-max) of {args.runs} batch-1 runs in {args.rounds} rounds; "
          f"floor = the model's multiply-accumulates at the XNNPACK ceiling; versions {versions}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"latency_ms": latency, "latency_range_ms": spread,
                       "throughput_b16": throughput, "xnnpack_partitions": partitions,
                       "floor_ms": floors, "xnnpack_macs_per_s": ceilings,
                       "openvino_int8_macs_per_s": openvino_int8,
                       "gemm_macs_per_s": gemm, "openvino_precision": precision,
                       "targets": targets, "versions": versions,
                       "threads": args.threads, "runs": args.runs}, f, indent=2)


NAME = "inference"
HELP = ("batch-1 latency and batch-16 throughput of our runtimes (Keras, SavedModel fp32/bf16, "
        "TFLite, OpenVINO) and the peers (PyTorch; its ONNX in ONNX Runtime, OpenVINO)")


def define_flags(fv):
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
    define_list(fv, __name__, "archs", ARCHS, "architectures", choices=ARCHS)
    define_list(fv, __name__, "runtimes", [], f"some of {', '.join(RUNTIMES)}; default: all "
                "but openvino_native, and saved_model_bf16 only on CPUs with native bfloat16",
                choices=RUNTIMES)
    flags.DEFINE_integer("threads", 2, "threads of every runtime", flag_values=fv)
    flags.DEFINE_integer("runs", 20, "timed batch-1 runs; the median is kept", flag_values=fv)
    flags.DEFINE_integer("rounds", 4, "the batch-1 runs are split into this many rounds over "
                         "all runtimes", flag_values=fv)
    flags.DEFINE_integer("warmup", 3, "untimed runs first", flag_values=fv)
    flags.DEFINE_integer("calibration_crops", 4, "crops for BatchNorm statistics and int8",
                         flag_values=fv)
    flags.DEFINE_boolean("naive_tflite", False, "also time fp32 TFLite with the plain "
                         "transposed convs", flag_values=fv)
