"""pipeline: samples/s of the training input pipeline against a per-sample OpenCV loop.

Each measurement runs in a fresh process pinned to its cores (threads fixed before
TensorFlow starts); the reference is the authors' style of pipeline, cv2.imread +
warpAffine + numpy targets, one sample at a time on one core.
"""
import json
import os
import subprocess
import sys
import time

from absl import flags

from mrpose_tf.benchmarks.common import COCO_SAMPLE, HEATMAP_SIZE, INPUT_SIZE, define_list


def _coco_train_records(annotations, images):
    from mrpose_tf.data.coco import read_coco
    return read_coco(annotations, images, train=True, aspect_ratio=INPUT_SIZE[1] / INPUT_SIZE[0])


def _measure_tf(args, cores):
    """Samples/s of the tf.data training pipeline limited to ``cores`` threads."""
    import tensorflow as tf

    from mrpose_tf.data.pipeline import build_dataset

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    records, spec = _coco_train_records(args.annotations, args.images)
    augment = dict(scale_factor=0.3, rotation_factor=40.0, rotation_prob=0.6, flip=True,
                   flip_prob=0.5)
    ds = build_dataset(records, keypoints=spec, input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE,
                       sigma=2.0, train=True, batch_size=args.batch_size, augment=augment,
                       repeat=True, num_parallel_calls=cores, opencv_warp=args.opencv_warp,
                       decode_once_per_image=args.decode_once_per_image)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.autotune.cpu_budget = cores
    it = iter(ds.with_options(options))
    for _ in range(args.warmup_batches):
        next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    return args.batches * args.batch_size / (time.perf_counter() - start)


def _measure_opencv(args):
    """Samples/s of a reference-style per-sample pipeline: cv2.imread + warpAffine + numpy targets."""
    import cv2
    import numpy as np

    from mrpose_tf.geometry import affine_points, flip_joints, get_affine_transform
    from mrpose_tf.preprocessing import preprocess

    cv2.setNumThreads(1)
    records, spec = _coco_train_records(args.annotations, args.images)
    rng = np.random.default_rng(0)
    heat_h, heat_w = HEATMAP_SIZE
    stride = INPUT_SIZE[1] / heat_w
    sigma, radius = 2.0, 6

    def targets(joints, vis):
        maps = np.zeros((spec.num_joints, heat_h, heat_w), np.float32)
        weights = vis.astype(np.float32).copy()
        size = 2 * radius + 1
        x = np.arange(size, dtype=np.float32)
        g = np.exp(-((x - radius) ** 2 + (x[:, None] - radius) ** 2) / (2 * sigma ** 2))
        for j, (px, py) in enumerate(joints):
            mx, my = int(px / stride + 0.5), int(py / stride + 0.5)
            ul, br = (int(mx - radius), int(my - radius)), (int(mx + radius + 1), int(my + radius + 1))
            if ul[0] >= heat_w or ul[1] >= heat_h or br[0] < 0 or br[1] < 0:
                weights[j] = 0
                continue
            if weights[j] > 0.5:
                gx, gy = (max(0, -ul[0]), min(br[0], heat_w) - ul[0]), (max(0, -ul[1]), min(br[1], heat_h) - ul[1])
                ix, iy = (max(0, ul[0]), min(br[0], heat_w)), (max(0, ul[1]), min(br[1], heat_h))
                maps[j, iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
        return maps, weights

    def sample(r):
        image = cv2.imread(r.image_path, cv2.IMREAD_COLOR)[..., ::-1]
        joints, vis, center = r.joints, r.visibility, r.center.copy()
        scale = r.scale * np.clip(rng.normal() * 0.3 + 1, 0.7, 1.3)
        rot = np.clip(rng.normal() * 40, -80, 80) if rng.random() <= 0.6 else 0.0
        if rng.random() <= 0.5:
            image = image[:, ::-1]
            joints, vis = flip_joints(joints, vis, image.shape[1], spec.flip_pairs)
            center[0] = image.shape[1] - 1 - center[0]
        m = get_affine_transform(center, scale, rot, INPUT_SIZE)
        crop = cv2.warpAffine(np.ascontiguousarray(image), m, (INPUT_SIZE[1], INPUT_SIZE[0]),
                              flags=cv2.INTER_LINEAR)
        return preprocess(crop), targets(affine_points(joints, m), vis)

    total = args.warmup_batches * args.batch_size
    for i in range(total):
        sample(records[i % len(records)])
    count = args.batches * args.batch_size
    start = time.perf_counter()
    for i in range(count):
        sample(records[i % len(records)])
    return count / (time.perf_counter() - start)


def _run_isolated(args, kind, cores):
    """Run one measurement in a fresh process (threads fixed before TF starts); samples/s."""
    command = [sys.executable, "-m", "mrpose_tf.benchmarks", "pipeline", f"--worker={kind}",
               f"--worker_cores={cores}"] + [f"--{k}={v}" for k, v in vars(args).items()
                                             if k in _PIPELINE_FLAGS]
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= cores:
        cpus = sorted(os.sched_getaffinity(0))[:cores]
        command = ["taskset", "-c", ",".join(map(str, cpus))] + command
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


_PIPELINE_FLAGS = ("annotations", "images", "batch_size", "batches", "warmup_batches",
                   "opencv_warp", "decode_once_per_image")


def run(args):
    if args.worker:
        tf_worker = args.worker == "tf"
        rate = _measure_tf(args, args.worker_cores) if tf_worker else _measure_opencv(args)
        print(rate)
        return
    results = {str(n): _run_isolated(args, "tf", n) for n in args.cores}
    opencv = _run_isolated(args, "opencv", 1)
    print(f"training pipeline, {INPUT_SIZE[0]}x{INPUT_SIZE[1]} crops + "
          f"{HEATMAP_SIZE[0]}x{HEATMAP_SIZE[1]}x17 targets, {args.annotations}")
    print(f"{'pipeline':<36}{'cores':>6}{'samples/s':>12}")
    print(f"{'reference-style OpenCV per sample':<36}{1:>6}{opencv:>12.1f}")
    for n, rate in results.items():
        label = "mrpose_tf tf.data" + (" (cv2 warp)" if args.opencv_warp else " (TF warp)")
        print(f"{label:<36}{n:>6}{rate:>12.1f}   x{rate / opencv:.2f} vs OpenCV")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples_per_s": results, "opencv_reference_samples_per_s": {"1": opencv},
                       "opencv_warp": args.opencv_warp,
                       "decode_once_per_image": args.decode_once_per_image},
                      f, indent=2)


NAME = "pipeline"
HELP = "training input pipeline samples/s"


def define_flags(fv):
    flags.DEFINE_string("annotations", os.path.join(COCO_SAMPLE, "test_coco.json"),
                        "COCO keypoint annotations", flag_values=fv)
    flags.DEFINE_string("images", COCO_SAMPLE, "their image folder", flag_values=fv)
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
    define_list(fv, __name__, "cores", [1, 2], "cores of each measurement", parse=int)
    flags.DEFINE_integer("batch_size", 32, "samples per batch", flag_values=fv)
    flags.DEFINE_integer("batches", 30, "timed batches", flag_values=fv)
    flags.DEFINE_integer("warmup_batches", 5, "untimed batches first", flag_values=fv)
    flags.DEFINE_boolean("opencv_warp", True, "crop with cv2.warpAffine (the training "
                         "default)", flag_values=fv)
    flags.DEFINE_boolean("decode_once_per_image", True, "decode each image once for all its "
                         "people (the training default)", flag_values=fv)
    flags.DEFINE_enum("worker", "", ["", "tf", "opencv"], "internal: one measurement in "
                      "this process", flag_values=fv)
    flags.DEFINE_integer("worker_cores", 1, "internal: the worker's cores", flag_values=fv)
