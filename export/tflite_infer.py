"""Keypoints of the people in an image with an exported .tflite pose model.

Needs only ai-edge-litert, numpy and OpenCV (no TensorFlow, no mrpose_tf): the crop and
decoding math below is a minimal numpy copy of mrpose_tf.geometry / mrpose_tf.codec, tested
equal to them (tests/test_tflite_infer.py). The kit's other runners (openvino_infer.py) and
the TF Serving client import it from here: :class:`PoseRunner`, the command line, drawing.

    python tflite_infer.py --model model_int8.tflite --image people.jpg \
        --boxes 10,20,120,300 --boxes 200,40,110,280 --output drawn.jpg

Beside the model, the exporter writes ``keypoints.json`` (the keypoint set: names, flip pairs
for the flip test, skeleton for drawing) and ``export_info.json`` (input size, input
preprocessing, flip test, box padding). Without export_info.json the model's input shape,
keras' 'caffe' preprocessing, the flip test and padding 1.25 are used; without
keypoints.json (an export of an older version) the flip pairs of export_info.json, and no
skeleton.
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np

# Without export_info.json: keras.applications' 'caffe' preprocessing (BGR, mean only).
DEFAULT_INPUT = {"channel_order": "bgr", "mean": [103.939, 116.779, 123.68],
                 "std": [1.0, 1.0, 1.0]}


def read_image_rgb(path):
    """An image file -> (H, W, 3) uint8 RGB as stored (EXIF orientation ignored, as
    mrpose_tf.images reads it and as the training pipeline decodes it), or None."""
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if image is None else np.ascontiguousarray(image[..., ::-1])


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def box_to_center_scale(boxes, aspect_ratio, padding=1.25):
    """(M, 4) xywh boxes -> centres (M, 2) and scales (M, 2) in units of 200 px."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    centers = np.stack([x + w * 0.5, y + h * 0.5], axis=1)
    new_w = np.where(w < aspect_ratio * h, h * aspect_ratio, w)
    new_h = np.where(w > aspect_ratio * h, w / aspect_ratio, h)
    return centers, np.stack([new_w, new_h], axis=1) / 200.0 * padding


def crop_matrix(center, scale, output_size, inv=False):
    """2x3 matrix mapping the box (centre, scale_x * 200 px wide) onto ``output_size`` (h, w)."""
    out_h, out_w = output_size
    zoom = out_w / (scale[0] * 200.0)
    if inv:
        return np.array([[1 / zoom, 0, center[0] - out_w * 0.5 / zoom],
                         [0, 1 / zoom, center[1] - out_h * 0.5 / zoom]])
    return np.array([[zoom, 0, out_w * 0.5 - zoom * center[0]],
                     [0, zoom, out_h * 0.5 - zoom * center[1]]])


def decode(heatmaps, centers, scales):
    """(N, h, w, K) heatmaps -> keypoints (N, K, 2) image pixels and scores (N, K).

    Argmax (0 where the max <= 0), a quarter pixel toward the larger neighbour, inverse crop.
    """
    n, h, w, k = heatmaps.shape
    flat = heatmaps.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    index = flat.argmax(axis=2)
    scores = flat.max(axis=2)
    px = np.where(scores > 0, index % w, 0)
    py = np.where(scores > 0, index // w, 0)
    coords = np.stack([px, py], axis=-1).astype(np.float64)
    for i, j in zip(*np.nonzero((px > 1) & (px < w - 1) & (py > 1) & (py < h - 1))):
        x, y, hm = px[i, j], py[i, j], heatmaps[i, :, :, j]
        coords[i, j] += 0.25 * np.sign([hm[y, x + 1] - hm[y, x - 1], hm[y + 1, x] - hm[y - 1, x]])
    keypoints = np.zeros((n, k, 2))
    for i in range(n):
        inverse = crop_matrix(centers[i], scales[i], (h, w), inv=True)
        keypoints[i] = coords[i] @ inverse[:, :2].T + inverse[:, 2]
    return keypoints, scores


class PoseRunner:
    """What every runner of the kit shares: the export's settings, crops, flip test, decoding.

    A runner subclass sets up its model and defines :meth:`heatmaps_of`; ``__call__`` does
    the rest.
    """

    def __init__(self, model_path, input_size, num_joints, info=None, keypoints=None):
        """Args:
          model_path: the model file; export_info.json and keypoints.json are looked for
            beside it.
          input_size: (height, width) of the model's input, used without export_info.json.
          num_joints: K, the model's heatmap channels.
          info: the export_info dict (default: export_info.json beside the model).
          keypoints: the keypoint-set dict (default: keypoints.json beside the model).

        Raises:
          ValueError: the flip test is on and neither keypoints.json nor export_info.json
            says which keypoints are left/right pairs.
        """
        folder = os.path.dirname(os.path.abspath(model_path))
        if info is None and os.path.exists(os.path.join(folder, "export_info.json")):
            info = _read_json(os.path.join(folder, "export_info.json"))
        if keypoints is None and os.path.exists(os.path.join(folder, "keypoints.json")):
            keypoints = _read_json(os.path.join(folder, "keypoints.json"))
        info, keypoints = info or {}, keypoints or {}
        self.num_joints = int(num_joints)
        self.input_size = tuple(int(v) for v in info.get("input_size", input_size))
        self.flip_test = bool(info.get("flip_test", True))
        self.box_padding = float(info.get("box_padding", 1.25))
        convention = {k: info.get(k, v) for k, v in DEFAULT_INPUT.items()}
        self.bgr = convention["channel_order"] == "bgr"
        self.mean = np.asarray(convention["mean"], np.float32)
        self.std = np.asarray(convention["std"], np.float32)
        self.flip_pairs = keypoints.get("flip_pairs", info.get("flip_pairs"))
        self.skeleton = keypoints.get("skeleton", [])
        self.names = keypoints.get("names")
        if self.flip_pairs is None and self.flip_test:
            raise ValueError(f"{model_path}: no keypoints.json (or flip_pairs in "
                             f"export_info.json) beside the model says which keypoints are "
                             f"left/right pairs; the flip test needs them")

    def preprocess(self, crop_rgb):
        """A uint8 RGB crop -> the network's input (the export's convention)."""
        crop = crop_rgb[..., ::-1] if self.bgr else crop_rgb
        return (crop.astype(np.float32) - self.mean) / self.std

    def heatmaps_of(self, crops):
        """(N, H, W, 3) float32 preprocessed crops -> (N, h, w, K) float32 heatmaps."""
        raise NotImplementedError

    def __call__(self, image_rgb, boxes):
        """Keypoints (M, K, 2) in image pixels and scores (M, K) of the people in ``boxes``.

        Args:
          image_rgb: (H, W, 3) uint8 RGB image.
          boxes: (M, 4) person boxes (x, y, w, h) in pixels.

        Raises:
          ValueError: an image that is not (H, W, 3) uint8, or boxes with a width or height
            <= 0 or a value that is not finite.
        """
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image_rgb.shape}")
        if image_rgb.dtype != np.uint8:  # the Predictor's and the SavedModel's contract too
            low, high = (image_rgb.min(), image_rgb.max()) if image_rgb.size else (0, 0)
            raise ValueError(f"image must be uint8 RGB with values 0..255, got "
                             f"{image_rgb.dtype} with values {low:g}..{high:g}")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if np.any(boxes[:, 2:] <= 0) or not np.all(np.isfinite(boxes)):
            raise ValueError(f"boxes need finite values and width, height > 0: {boxes.tolist()}")
        if not len(boxes):
            return np.zeros((0, self.num_joints, 2)), np.zeros((0, self.num_joints), np.float32)
        height, width = self.input_size
        centers, scales = box_to_center_scale(boxes, width / height, self.box_padding)
        crops = np.stack([self.preprocess(cv2.warpAffine(
            image_rgb, crop_matrix(center, scale, (height, width)), (width, height),
            flags=cv2.INTER_LINEAR)) for center, scale in zip(centers, scales)])
        if not self.flip_test:
            return decode(self.heatmaps_of(crops), centers, scales)
        # The crops and their mirror images in one call.
        both = self.heatmaps_of(np.concatenate([crops, crops[:, :, ::-1]]))
        heatmaps, mirrored = both[:len(crops)], both[len(crops):, :, ::-1]
        order = np.arange(heatmaps.shape[-1])
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        mirrored = mirrored[..., order]
        mirrored[:, :, 1:] = mirrored[:, :, :-1].copy()  # the reference's one-pixel shift
        return decode((heatmaps + mirrored) * 0.5, centers, scales)


class TFLitePose(PoseRunner):
    """A .tflite pose model (batch 1, preprocessed crops -> heatmaps) and its crop settings."""

    def __init__(self, model_path, num_threads=2, info=None, keypoints=None):
        """Args:
          model_path: the .tflite file.
          num_threads: interpreter threads.
          info: the export_info dict (default: export_info.json beside the model).
          keypoints: the keypoint-set dict (default: keypoints.json beside the model).

        Raises:
          ValueError: the flip test is on and neither keypoints.json nor export_info.json
            says which keypoints are left/right pairs.
        """
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()
        super().__init__(model_path, self.input["shape"][1:3], self.output["shape"][-1],
                         info, keypoints)

    def heatmaps(self, crop):
        """One preprocessed (H, W, 3) float32 crop -> (h, w, K) float32 heatmaps."""
        x = crop[None].astype(np.float32)
        if self.input["dtype"] != np.float32:  # an int8/uint8-input model
            scale, zero = self.input["quantization"]
            x = np.clip(np.round(x / scale + zero), *_limits(self.input["dtype"]))
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0]
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def heatmaps_of(self, crops):
        """(N, H, W, 3) preprocessed crops -> (N, h, w, K), one invocation each (batch 1)."""
        return np.stack([self.heatmaps(np.ascontiguousarray(crop)) for crop in crops])


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def draw(image_bgr, keypoints, scores, skeleton=(), threshold=0.2):
    """Draw joints (score > threshold) and the ``skeleton``'s limbs on a BGR image, in place.

    Args:
      image_bgr: (H, W, 3) uint8 BGR image.
      keypoints: (M, K, 2) points (x, y) in pixels; scores: (M, K).
      skeleton: 0-based (a, b) limb pairs (the ``skeleton`` of keypoints.json).
    """
    for person, person_scores in zip(keypoints, scores):
        for a, b in skeleton:
            if person_scores[a] > threshold and person_scores[b] > threshold:
                cv2.line(image_bgr, tuple(int(v) for v in person[a]),
                         tuple(int(v) for v in person[b]), (255, 128, 0), 2)
        for (x, y), s in zip(person, person_scores):
            if s > threshold:
                cv2.circle(image_bgr, (int(x), int(y)), 3, (0, 0, 255), -1)
    return image_bgr


def joined_box_values(argv):
    """``--boxes -50,100,120,240`` as ``--boxes=-50,100,120,240``: argparse would read a
    value that starts with '-' (a box left of or above the image) as an option."""
    out, i = [], 0
    while i < len(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if argv[i] == "--boxes" and len(value) > 1 and value[0] == "-" \
                and value[1] in "0123456789.":
            out.append("--boxes=" + value)
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def cli_parser(description, model_help):
    """The kit's command line: --model, --image, --boxes (repeated), --threads, --output,
    --json; a runner adds its own options to it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--boxes", action="append", required=True,
                        help="person box x,y,w,h in pixels (repeat for several people; x and y "
                             "may be negative)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the image with the keypoints drawn here")
    parser.add_argument("--json", help="write keypoints and scores here as JSON")
    return parser


def run_cli(parser, make_runner, argv=None):
    """Parse ``argv`` (default: sys.argv), run ``make_runner(args)`` (a :class:`PoseRunner`)
    on the image's boxes, print or write the JSON result and draw the keypoints."""
    args = parser.parse_args(joined_box_values(sys.argv[1:] if argv is None else list(argv)))
    image_rgb = read_image_rgb(args.image)
    if image_rgb is None:
        parser.error(f"cannot read image {args.image}")
    try:
        boxes = [[float(v) for v in box.split(",")] for box in args.boxes]
    except ValueError:
        parser.error(f"--boxes must be x,y,w,h numbers, got {args.boxes}")
    if any(len(box) != 4 for box in boxes):
        parser.error(f"--boxes must be x,y,w,h (4 numbers), got {args.boxes}")
    model = make_runner(args)
    keypoints, scores = model(image_rgb, boxes)
    result = {"keypoints": keypoints.tolist(), "scores": scores.tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    else:
        print(json.dumps(result))
    if args.output:
        image_bgr = np.ascontiguousarray(image_rgb[..., ::-1])
        cv2.imwrite(args.output, draw(image_bgr, keypoints, scores, model.skeleton))


def main(argv=None):
    parser = cli_parser(__doc__.split("\n")[0], ".tflite file")
    run_cli(parser, lambda args: TFLitePose(args.model, num_threads=args.threads), argv)


if __name__ == "__main__":
    main()
