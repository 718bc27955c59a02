"""stages: TFLite batch-1 latency per ResNet stage and the heads, against each segment's
multiply-accumulates at the XNNPACK ceiling (where a model's time goes)."""
import json

from absl import flags

from mrpose_tf.benchmarks.common import ARCHS, INPUT_SIZE, calibrate_batch_norm, xnnpack_rate
from mrpose_tf.benchmarks.timing import timed


def run(args):
    """Batch-1 TFLite latency of each stage against its multiply-accumulates at the ceiling.

    Times the model cut after the stem (``pool1_pool``) and after each ResNet stage, then the
    whole model; a stage's time is the difference between consecutive cuts.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.export import inference_model
    from mrpose_tf.export.tflite import (convert_all, convert_pose_model, litert_interpreter,
                                         run_tflite)
    from mrpose_tf.models import build_model
    from mrpose_tf.models.backbones import stage_outputs
    from mrpose_tf.models.complexity import count_flops

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    q = args.quantization
    ceiling = xnnpack_rate(q, args.threads)
    crops = np.random.default_rng(0).normal(0, 60, (4,) + INPUT_SIZE + (3,)).astype(np.float32)
    model = build_model(args.arch, "resnet50", 17, INPUT_SIZE, backbone_weights=None)
    calibrate_batch_norm(model, crops)
    taps = stage_outputs(model)
    cuts = [("stem", model.get_layer("pool1_pool").output)] + [
        (f"stage {s}", taps[f"C{s}"]) for s in (2, 3, 4, 5)] + [("heads", None)]
    print(f"{args.arch} TFLite {q}, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, {args.threads} threads; "
          f"XNNPACK ceiling {ceiling / 1e9:.0f} GMAC/s")
    print(f"{'segment':<10}{'ms':>8}{'GMAC':>8}{'floor ms':>10}{'GMAC/s':>8}{'of ceiling':>12}")
    runners, macs = [], []
    for name, output in cuts:
        if output is None:  # the whole model, in the exported form of its quantization
            flatbuffer = convert_pose_model(model, [q], crops)[q]
            macs.append(count_flops(inference_model(model, winograd=q != "int8")) / 2)
        else:
            part = keras.Model(model.input, output)
            flatbuffer = convert_all(part, [q], crops)[q]
            macs.append(count_flops(part) / 2)
        interpreter = litert_interpreter(flatbuffer, num_threads=args.threads)
        runners.append(lambda interpreter=interpreter: run_tflite(interpreter, crops[:1]))
    # The cuts' rounds interleave, so that a slow spell of the host hits all of them alike.
    totals = [min(times) for times in zip(*(
        [timed(runner, args.runs, 3) for runner in runners] for _ in range(args.rounds)))]
    done_ms = done_macs = 0.0
    rows = {}
    for (name, _), total_ms, cut_macs in zip(cuts, totals, macs):
        ms, seg_macs = total_ms - done_ms, cut_macs - done_macs
        rows[name] = {"ms": ms, "macs": seg_macs}
        print(f"{name:<10}{ms:>8.2f}{seg_macs / 1e9:>8.2f}{seg_macs / ceiling * 1e3:>10.2f}"
              f"{seg_macs / ms / 1e6:>8.0f}{seg_macs / ms / 1e6 / (ceiling / 1e9):>11.0%}",
              flush=True)
        done_ms, done_macs = total_ms, cut_macs
    print(f"{'total':<10}{done_ms:>8.2f}{done_macs / 1e9:>8.2f}{done_macs / ceiling * 1e3:>10.2f}")
    print(f"ms = the model cut there (best of {args.rounds} interleaved medians of {args.runs} "
          f"runs) minus the previous cut; floor = the segment's multiply-accumulates at the "
          f"ceiling")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "quantization": q, "xnnpack_macs_per_s": ceiling,
                       "segments": rows, "total_ms": done_ms}, f, indent=2)


NAME = "stages"
HELP = ("TFLite batch-1 latency per ResNet stage and the heads, against each one's "
        "multiply-accumulates at the ceiling")


def define_flags(fv):
    flags.DEFINE_enum("arch", "simple_baseline", ARCHS, "architecture", flag_values=fv)
    flags.DEFINE_enum("quantization", "int8", ["fp32", "int8"], "TFLite model", flag_values=fv)
    flags.DEFINE_integer("threads", 2, "XNNPACK threads", flag_values=fv)
    flags.DEFINE_integer("runs", 20, "timed runs per round", flag_values=fv)
    flags.DEFINE_integer("rounds", 5, "interleaved rounds; the median is kept", flag_values=fv)
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
