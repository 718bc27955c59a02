"""Keypoints of the people in an image with an exported .tflite pose model.

Needs only ai-edge-litert, numpy and OpenCV (no TensorFlow, no mrpose_tf): the crop and
decoding math below is a minimal numpy copy of mrpose_tf.geometry / mrpose_tf.inference.

    python tflite_infer.py --model model_int8.tflite --image people.jpg \
        --boxes 10,20,120,300 --boxes 200,40,110,280 --output drawn.jpg

Input size, flip pairs and box padding come from ``export_info.json`` beside the model
(written by the exporter); without it, the model's input shape, COCO flip pairs for 17
joints and padding 1.25 are used.
"""
import argparse
import json
import os

import cv2
import numpy as np

BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # keras 'caffe' preprocessing
COCO_FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6],
                 [5, 7], [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4]]


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


class TFLitePose:
    """A .tflite pose model (batch 1, preprocessed crops -> heatmaps) and its crop settings."""

    def __init__(self, model_path, num_threads=2, info=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()
        info_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "export_info.json")
        if info is None and os.path.exists(info_path):
            with open(info_path) as f:
                info = json.load(f)
        info = info or {}
        self.input_size = tuple(info.get("input_size", self.input["shape"][1:3]))
        num_joints = int(self.output["shape"][-1])
        self.flip_pairs = info.get("flip_pairs", COCO_FLIP_PAIRS if num_joints == 17 else [])
        self.flip_test = bool(info.get("flip_test", True))
        self.box_padding = float(info.get("box_padding", 1.25))

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

    def __call__(self, image_rgb, boxes):
        """Keypoints (M, K, 2) in image pixels and scores (M, K) of the people in ``boxes``.

        Args:
          image_rgb: (H, W, 3) uint8 RGB image.
          boxes: (M, 4) person boxes (x, y, w, h) in pixels.
        """
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image_rgb.dtype} "
                             f"{image_rgb.shape}")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if np.any(boxes[:, 2:] <= 0) or not np.all(np.isfinite(boxes)):
            raise ValueError(f"boxes need finite values and width, height > 0: {boxes.tolist()}")
        height, width = self.input_size
        centers, scales = box_to_center_scale(boxes, width / height, self.box_padding)
        out = []
        for center, scale in zip(centers, scales):
            crop = cv2.warpAffine(image_rgb, crop_matrix(center, scale, (height, width)),
                                  (width, height), flags=cv2.INTER_LINEAR)
            crop = crop[..., ::-1].astype(np.float32) - BGR_MEAN
            heatmaps = self.heatmaps(crop)
            if self.flip_test:
                mirrored = self.heatmaps(np.ascontiguousarray(crop[:, ::-1]))[:, ::-1]
                order = np.arange(heatmaps.shape[-1])
                for a, b in self.flip_pairs:
                    order[a], order[b] = b, a
                mirrored = mirrored[..., order]
                mirrored[:, 1:] = mirrored[:, :-1].copy()  # the reference's one-pixel shift
                heatmaps = (heatmaps + mirrored) * 0.5
            out.append(heatmaps)
        k = int(self.output["shape"][-1])
        if not out:
            return np.zeros((0, k, 2)), np.zeros((0, k), np.float32)
        return decode(np.stack(out), centers, scales)


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def draw(image_bgr, keypoints, scores, threshold=0.2, skeleton=COCO_SKELETON):
    """Draw joints (score > threshold) and limbs on a BGR image, in place."""
    for person, person_scores in zip(keypoints, scores):
        for a, b in skeleton if len(person) == 17 else []:
            if person_scores[a] > threshold and person_scores[b] > threshold:
                cv2.line(image_bgr, tuple(int(v) for v in person[a]),
                         tuple(int(v) for v in person[b]), (255, 128, 0), 2)
        for (x, y), s in zip(person, person_scores):
            if s > threshold:
                cv2.circle(image_bgr, (int(x), int(y)), 3, (0, 0, 255), -1)
    return image_bgr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help=".tflite file")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--boxes", action="append", required=True,
                        help="person box x,y,w,h in pixels (repeat for several people)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the image with the keypoints drawn here")
    parser.add_argument("--json", help="write keypoints and scores here as JSON")
    args = parser.parse_args(argv)
    image_bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image_bgr is None:
        parser.error(f"cannot read image {args.image}")
    try:
        boxes = [[float(v) for v in box.split(",")] for box in args.boxes]
    except ValueError:
        parser.error(f"--boxes must be x,y,w,h numbers, got {args.boxes}")
    if any(len(box) != 4 for box in boxes):
        parser.error(f"--boxes must be x,y,w,h (4 numbers), got {args.boxes}")
    model = TFLitePose(args.model, num_threads=args.threads)
    keypoints, scores = model(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), boxes)
    result = {"keypoints": keypoints.tolist(), "scores": scores.tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    else:
        print(json.dumps(result))
    if args.output:
        cv2.imwrite(args.output, draw(image_bgr, keypoints, scores))


if __name__ == "__main__":
    main()
