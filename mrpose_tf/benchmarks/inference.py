"""inference: batch-1 latency and batch-16 throughput of every runtime a model is served in.

Keras (a tf.function), the SavedModel (TF Serving's graph), TFLite fp32 / fp16 / int8
(LiteRT with XNNPACK), and the same network in plain PyTorch as a peer, all measured in the
same run. Random weights with BatchNorm statistics set on the crops (a trained network's
value ranges, for int8). The floor of a TFLite model is its multiply-accumulates at the
machine's XNNPACK ceiling.

``--json=OUT`` writes {'latency_ms': {arch: {runtime: ms}}, 'throughput_b16': {arch:
{runtime: img/s}}, 'xnnpack_partitions', 'floor_ms', 'xnnpack_macs_per_s', 'threads',
'runs'}.
"""
import json
import os
import tempfile

from absl import flags

from mrpose_tf.benchmarks.common import (ARCHS, INPUT_SIZE, calibrate_batch_norm, define_list,
                                         model_macs, torch_peer, xnnpack_rate)
from mrpose_tf.benchmarks.timing import timed

RUNTIMES = ("keras", "saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8")


def _runners(arch, args, workdir):
    """{runtime: (batch-1 fn, batch-16 fn)} for one architecture (random weights).

    TFLite runners also get ``xnnpack_partitions`` (attribute of the batch-1 fn): the number
    of XNNPACK delegate partitions (1: the whole graph runs in XNNPACK).
    """
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.config import base_config
    from mrpose_tf.export import export_saved_model
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
    if "saved_model" in args.runtimes:
        config = base_config()
        config.model.input_size = INPUT_SIZE
        serving = tf.saved_model.load(export_saved_model(
            model, config, COCO, os.path.join(workdir, arch))).signatures[
                "heatmaps_preprocessed"]
        runners["saved_model"] = (lambda: serving(image=tf.constant(one)),
                                  lambda: serving(image=tf.constant(sixteen)))
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
    return runners


def _torch_runners(arch, threads):
    """{'torch': (batch-1 fn, batch-16 fn)} of the same network in eager PyTorch, if installed."""
    net, torch = torch_peer(arch)
    if net is None:
        return {}
    torch.set_num_threads(threads)
    net.eval()
    one, sixteen = torch.randn(1, 3, *INPUT_SIZE), torch.randn(16, 3, *INPUT_SIZE)

    def run(x):
        with torch.no_grad():
            net(x)

    return {"torch": (lambda: run(one), lambda: run(sixteen))}


def run(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    latency, throughput, partitions, floors = {}, {}, {}, {}
    ceilings = {q: xnnpack_rate(q, args.threads) for q in ("fp32", "int8")
                if f"tflite_{q}" in args.runtimes}
    if ceilings:
        print("XNNPACK ceiling (best of plain 1x1 / 3x3 conv stacks): " + ", ".join(
            f"{q} {rate / 1e9:.0f} GMAC/s" for q, rate in ceilings.items()))
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs:
            # The float models run the Winograd form (fewer MACs), int8 the direct one.
            floors[arch] = {f"tflite_{q}": model_macs(arch, winograd=q == "fp32") / rate * 1e3
                            for q, rate in ceilings.items()}
            runners = {**_runners(arch, args, workdir), **_torch_runners(arch, args.threads)}
            latency[arch], throughput[arch], partitions[arch] = {}, {}, {}
            for name, (batch1, batch16) in runners.items():
                latency[arch][name] = timed(batch1, args.runs, args.warmup)
                throughput[arch][name] = 16e3 / timed(batch16, max(3, args.runs // 4), 1)
                notes = ""
                if name in floors[arch]:
                    notes = f"   floor {floors[arch][name]:.1f} ms"
                if hasattr(batch1, "xnnpack_partitions"):
                    partitions[arch][name] = batch1.xnnpack_partitions
                    notes += f"   XNNPACK partitions: {batch1.xnnpack_partitions}"
                print(f"{arch:<16}{name:<20}{latency[arch][name]:>10.1f} ms"
                      f"{throughput[arch][name]:>10.1f} img/s (batch 16){notes}", flush=True)
    if not any("torch" in by_runtime for by_runtime in latency.values()):
        print("torch not installed: PyTorch column skipped")
    print(f"ResNet-50, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, random weights, {args.threads} threads; "
          f"latency = median of {args.runs} batch-1 runs; floor = the model's multiply-"
          f"accumulates at the XNNPACK ceiling")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"latency_ms": latency, "throughput_b16": throughput,
                       "xnnpack_partitions": partitions, "floor_ms": floors,
                       "xnnpack_macs_per_s": ceilings,
                       "threads": args.threads, "runs": args.runs}, f, indent=2)


NAME = "inference"
HELP = ("batch-1 latency and batch-16 throughput of Keras, SavedModel and TFLite "
        "fp32/fp16/int8, and PyTorch")


def define_flags(fv):
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
    define_list(fv, __name__, "archs", ARCHS, "architectures", choices=ARCHS)
    define_list(fv, __name__, "runtimes", RUNTIMES, "runtimes to time", choices=RUNTIMES)
    flags.DEFINE_integer("threads", 2, "threads of every runtime", flag_values=fv)
    flags.DEFINE_integer("runs", 20, "timed runs; the median is kept", flag_values=fv)
    flags.DEFINE_integer("warmup", 3, "untimed runs first", flag_values=fv)
    flags.DEFINE_integer("calibration_crops", 4, "crops for BatchNorm statistics and int8",
                         flag_values=fv)
    flags.DEFINE_boolean("naive_tflite", False, "also time fp32 TFLite with the plain "
                         "transposed convs", flag_values=fv)
