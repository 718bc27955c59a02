"""Draw the predicted skeletons on images or a video.

Examples:
  python scripts/demo.py --checkpoint=runs/coco_r50 --image=photo.jpg
  python scripts/demo.py --checkpoint=runs/coco_r50 --images_dir=photos/ \\
      --boxes=detections.json --heatmaps
  python scripts/demo.py --config=configs/coco/mrfeanet2_resnet50_256x192.py \\
      --saved_model=export/saved_model --video=clip.mp4 --detector=hog

Person boxes: --boxes (COCO detection results: image_id, bbox [x, y, w, h], score; an
image's id is its file name's number, e.g. 000000000785.jpg -> 785, or a 'file_name' key),
else OpenCV's built-in HOG people detector (--detector=hog, no download) or the whole image
(--detector=whole). Outputs PNG (images) or MP4 (video) files in --output_dir; --heatmaps
also writes the grid of the K heatmaps of every person (as the paper's Fig. 7).
"""
import collections
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mrpose_tf.cli import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config (default: the run's "
                                "config.json).")
flags.DEFINE_string("checkpoint", None, "Run directory, checkpoint prefix or weights file.")
flags.DEFINE_string("saved_model", None, "SavedModel with a crops -> heatmaps signature.")
flags.DEFINE_string("image", None, "One image file.")
flags.DEFINE_string("images_dir", None, "A folder of images.")
flags.DEFINE_string("video", None, "A video file (writes an MP4).")
flags.DEFINE_string("boxes", None, "Person boxes, COCO detection-results JSON.")
flags.DEFINE_enum("detector", "auto", ["auto", "hog", "whole"], "Boxes when --boxes is not "
                  "given: OpenCV's HOG people detector (falls back to the whole image when it "
                  "finds nobody), the whole image, or auto (HOG where this OpenCV has it: "
                  "OpenCV 5 moved it out of the main module).")
flags.DEFINE_float("box_thre", 0.5, "Minimum score of a --boxes detection.")
flags.DEFINE_float("kpt_thre", 0.2, "Minimum joint score to draw a joint.")
flags.DEFINE_boolean("flip_test", True, "Flip test.")
flags.DEFINE_boolean("heatmaps", False, "Also write the heatmap grid of every person.")
flags.DEFINE_string("output_dir", "demo_output", "Where to write the pictures.")
FLAGS = flags.FLAGS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_boxes(path, score_threshold):
    """{image key: [(x, y, w, h), ...]} from a COCO detection-results file."""
    with open(path, encoding="utf-8") as f:
        detections = json.load(f)
    if not isinstance(detections, list):
        raise ValueError(f"box file {path} must hold a JSON list of detections")
    boxes = collections.defaultdict(list)
    for i, det in enumerate(detections):
        if det.get("category_id", 1) != 1 or det.get("score", 1.0) < score_threshold:
            continue
        if "bbox" not in det or len(det["bbox"]) != 4:
            raise ValueError(f"box file {path}: detection [{i}] has no [x, y, w, h] 'bbox'")
        key = det.get("file_name", det.get("image_id"))
        boxes[str(key)].append([float(v) for v in det["bbox"]])
    return boxes


def has_hog():
    import cv2

    return hasattr(cv2, "HOGDescriptor")


def boxes_for(image_rgb, key, file_boxes, detector, reuse_single=True):
    """Person boxes of one image: from the box file, HOG, or the whole image.

    ``reuse_single``: a box file listing one image only gives its boxes to this image too
    (one picture or a video; not a folder of different images).
    """
    import cv2
    import numpy as np

    height, width = image_rgb.shape[:2]
    if file_boxes is not None:  # boxes with no area are skipped
        found = file_boxes.get(key[0], []) + file_boxes.get(key[1], [])
        if reuse_single and len(file_boxes) == 1 and not found:  # a file for one image only
            found = next(iter(file_boxes.values()))
        return [b for b in found if b[2] > 0 and b[3] > 0]
    if detector == "hog":
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        rects, _ = hog.detectMultiScale(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY),
                                        winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects):
            return np.asarray(rects, np.float64).tolist()
        logging.info("HOG found nobody in %s: using the whole image", key[1])
    return [[0.0, 0.0, float(width), float(height)]]


def annotate(predictor, spec, image_rgb, boxes, kpt_thre, with_heatmaps):
    """(picture with skeletons, [heatmap grid per person]) of one RGB image."""
    from mrpose_tf.visualization import draw_skeleton, heatmap_grid

    out = predictor.predict(image_rgb, boxes)
    picture = draw_skeleton(image_rgb, out["keypoints"], out["scores"], spec,
                            score_threshold=kpt_thre)
    grids = [heatmap_grid(h, crop=c, names=spec.names)
             for h, c in zip(out["heatmaps"], out["crops"])] if with_heatmaps else []
    return picture, grids


def image_paths():
    if FLAGS.image:
        return [FLAGS.image]
    names = sorted(n for n in os.listdir(FLAGS.images_dir)
                   if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise app.UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {FLAGS.images_dir}")
    return [os.path.join(FLAGS.images_dir, n) for n in names]


def image_key(path):
    """(numeric id as text, file name): how a box file may refer to the image."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return (str(int(stem)) if stem.isdigit() else stem, os.path.basename(path))


def run_images(predictor, spec, file_boxes):
    import cv2

    from mrpose_tf.images import read_image_rgb

    written, skipped = [], 0
    for path in image_paths():
        rgb = read_image_rgb(path)
        if rgb is None:
            logging.warning("skipping %s: the image cannot be read or decoded", path)
            skipped += 1
            continue
        key = image_key(path)
        boxes = boxes_for(rgb, key, file_boxes, FLAGS.detector,
                          reuse_single=not FLAGS.images_dir)
        picture, grids = annotate(predictor, spec, rgb, boxes, FLAGS.kpt_thre, FLAGS.heatmaps)
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(FLAGS.output_dir, f"{stem}_pose.png")
        cv2.imwrite(target, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        written.append(target)
        for i, grid in enumerate(grids):
            grid_path = os.path.join(FLAGS.output_dir, f"{stem}_person{i}_heatmaps.png")
            cv2.imwrite(grid_path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
            written.append(grid_path)
        print(f"{path}: {len(boxes)} people -> {target}")
    print(f"wrote {len(written)} files to {FLAGS.output_dir}; skipped {skipped} unreadable images")
    return written


def run_video(predictor, spec, file_boxes):
    import cv2

    capture = cv2.VideoCapture(FLAGS.video)
    if not capture.isOpened():
        raise ValueError(f"cannot open video {FLAGS.video}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    stem = os.path.splitext(os.path.basename(FLAGS.video))[0]
    target = os.path.join(FLAGS.output_dir, f"{stem}_pose.mp4")
    writer, frames = None, 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = boxes_for(rgb, (str(frames), f"frame{frames}"), file_boxes, FLAGS.detector)
        picture, _ = annotate(predictor, spec, rgb, boxes, FLAGS.kpt_thre, False)
        if writer is None:
            writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                     (picture.shape[1], picture.shape[0]))
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        frames += 1
    capture.release()
    if writer is None:
        raise ValueError(f"video {FLAGS.video} has no readable frames")
    writer.release()
    print(f"{FLAGS.video}: {frames} frames -> {target}")
    return [target]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if sum(bool(v) for v in (FLAGS.image, FLAGS.images_dir, FLAGS.video)) != 1:
        raise app.UsageError("give exactly one of --image, --images_dir, --video")
    if bool(FLAGS.checkpoint) == bool(FLAGS.saved_model):
        raise app.UsageError("give exactly one of --checkpoint and --saved_model")
    from mrpose_tf.config import resolve_unset_fields
    from mrpose_tf.predictor import Predictor

    config = None if FLAGS.config is None else resolve_unset_fields(FLAGS.config)
    if FLAGS.checkpoint:
        predictor = Predictor.from_checkpoint(FLAGS.checkpoint, config,
                                              flip_test=FLAGS.flip_test)
    elif config is None:
        raise app.UsageError("--saved_model needs --config (the input size and box padding)")
    else:
        predictor = Predictor.from_saved_model(FLAGS.saved_model,
                                               input_size=tuple(config.model.input_size),
                                               flip_test=FLAGS.flip_test,
                                               box_padding=float(config.augment.box_padding))
    spec = predictor.keypoints
    detector = FLAGS.detector
    if detector == "auto":
        detector = "hog" if has_hog() else "whole"
    elif detector == "hog" and not has_hog():
        import cv2

        raise app.UsageError(f"--detector=hog: this OpenCV ({cv2.__version__}) has no "
                             f"HOGDescriptor; use --boxes or --detector=whole")
    FLAGS.detector = detector
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    file_boxes = load_boxes(FLAGS.boxes, FLAGS.box_thre) if FLAGS.boxes else None
    if FLAGS.video:
        run_video(predictor, spec, file_boxes)
    else:
        run_images(predictor, spec, file_boxes)


def run():
    """The console script's entry point."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
