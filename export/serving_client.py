"""Send an image and person boxes to TF Serving and draw the keypoints it returns.

Calls the ``keypoints_encoded`` signature of the exported SavedModel over REST: the image
file's bytes go base64-encoded ({"b64": ...}), the boxes as (M, 4) x, y, w, h pixels.
Needs only numpy and OpenCV (and the standard library).

    python serving_client.py --server http://localhost:8501 --model_name pose \
        --image people.jpg --boxes 10,20,120,300 --output drawn.jpg
"""
import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request

import cv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Same folder; numpy + OpenCV only.
from tflite_infer import draw, joined_box_values, read_image_rgb  # noqa: E402


def predict_request(image_bytes, boxes):
    """The JSON body of a :predict call on the ``keypoints_encoded`` signature."""
    return {"signature_name": "keypoints_encoded",
            "inputs": {"image_bytes": {"b64": base64.b64encode(image_bytes).decode("ascii")},
                       "boxes": [[float(v) for v in box] for box in boxes]}}


def predict(server, model_name, image_bytes, boxes, timeout=60.0):
    """Keypoints (M, K, 2) and scores (M, K) as nested lists, from TF Serving's REST API.

    Raises:
      RuntimeError: with the server's error message (e.g. a failed input check).
    """
    url = f"{server.rstrip('/')}/v1/models/{model_name}:predict"
    body = json.dumps(predict_request(image_bytes, boxes)).encode("utf-8")
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            outputs = json.load(response)["outputs"]
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}: HTTP {error.code}: {error.read().decode(errors='replace')}")
    return outputs["keypoints"], outputs["scores"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="http://localhost:8501")
    parser.add_argument("--model_name", default="pose")
    parser.add_argument("--image", required=True)
    parser.add_argument("--boxes", action="append", required=True,
                        help="x,y,w,h (repeat; x and y may be negative)")
    parser.add_argument("--output", default="keypoints.jpg")
    parser.add_argument("--keypoints", help="the export's keypoints.json: its skeleton is drawn "
                        "(default: joints only)")
    args = parser.parse_args(joined_box_values(sys.argv[1:] if argv is None else list(argv)))
    with open(args.image, "rb") as f:
        image_bytes = f.read()
    boxes = [[float(v) for v in box.split(",")] for box in args.boxes]
    keypoints, scores = predict(args.server, args.model_name, image_bytes, boxes)
    print(json.dumps({"keypoints": keypoints, "scores": scores}))
    skeleton = []
    if args.keypoints:
        with open(args.keypoints, encoding="utf-8") as f:
            skeleton = json.load(f)["skeleton"]
    # The pixels the server decoded (TensorFlow ignores EXIF orientation), for drawing.
    image_bgr = read_image_rgb(args.image)[..., ::-1].copy()
    cv2.imwrite(args.output, draw(image_bgr, keypoints, scores, skeleton))


if __name__ == "__main__":
    main()
