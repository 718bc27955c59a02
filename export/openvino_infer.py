"""Keypoints of the people in an image with an exported OpenVINO pose model (model.xml).

Needs only openvino, numpy and OpenCV (no TensorFlow, no mrpose_tf). Cropping, the input
convention, the flip test and decoding are those of tflite_infer.py beside it (imported from
there); only the model call differs: every crop of the image and its mirror image go through
the IR in one batch.

    python openvino_infer.py --model exported/openvino/model.xml --image people.jpg \
        --boxes 10,20,120,300 --boxes 200,40,110,280 --output drawn.jpg

The exporter writes ``keypoints.json`` and ``export_info.json`` into the IR's folder, as for
the .tflite models (see tflite_infer.py for what each holds and the defaults without them).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Same folder; numpy + OpenCV only.
from tflite_infer import PoseRunner, cli_parser, run_cli  # noqa: E402

PRECISIONS = ("f32", "bf16", "f16")


class OpenVINOPose(PoseRunner):
    """An OpenVINO IR pose model (preprocessed crops -> heatmaps, any batch) and its crop
    settings."""

    def __init__(self, model_path, num_threads=2, precision=None, device="CPU", info=None,
                 keypoints=None):
        """Args:
          model_path: the IR's model.xml (model.bin beside it).
          num_threads: inference threads.
          precision: the inference precision, 'f32', 'bf16' or 'f16'; None: the device's
            default (on CPUs: bf16 where AVX512-BF16 or AMX is present, f32 elsewhere).
          device: OpenVINO device name ('CPU', 'GPU', 'AUTO', ...).
          info: the export_info dict (default: export_info.json beside the model).
          keypoints: the keypoint-set dict (default: keypoints.json beside the model).

        Raises:
          ValueError: an unknown precision, or the flip test is on and neither keypoints.json
            nor export_info.json says which keypoints are left/right pairs.
        """
        import openvino as ov

        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {PRECISIONS}")
        core = ov.Core()
        model = core.read_model(model_path)
        config = {"INFERENCE_NUM_THREADS": int(num_threads), "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, device, config)
        shape = model.inputs[0].get_partial_shape()
        input_size = [d.get_length() if d.is_static else None for d in shape][1:3]
        num_joints = model.outputs[0].get_partial_shape()[-1].get_length()
        super().__init__(model_path, input_size, num_joints, info, keypoints)

    def heatmaps_of(self, crops):
        """(N, H, W, 3) float32 preprocessed crops -> (N, h, w, K) float32, in one call."""
        crops = np.ascontiguousarray(crops, np.float32)
        return np.asarray(self.compiled([crops])[0], np.float32)


def main(argv=None):
    parser = cli_parser(__doc__.split("\n")[0], "the IR's model.xml")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="inference precision (default: the device's)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device")
    run_cli(parser, lambda args: OpenVINOPose(args.model, args.threads, args.precision,
                                              args.device), argv)


if __name__ == "__main__":
    main()
