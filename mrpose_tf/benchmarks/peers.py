"""The peers of the inference benchmark: the same network in PyTorch, exported to ONNX.

What a user of the authors' code would deploy on a CPU: the PyTorch network
(:mod:`mrpose_tf.benchmarks.torch_peer`) exported by ``torch.onnx.export`` and run by ONNX
Runtime (float32, and int8 static QDQ from ``onnxruntime.quantization.quantize_static``) and
by OpenVINO (float32, the device's default precision, and int8 from ``nncf.quantize``). Each
peer is measured only where its packages are installed. BatchNorm statistics are set on the
crops, as for our own models (:func:`mrpose_tf.benchmarks.common.calibrate_batch_norm`).
"""
import importlib.util
import os

from mrpose_tf.benchmarks.common import INPUT_SIZE, torch_peer

PEERS = ("torch", "onnx_ort_fp32", "onnx_ort_int8", "onnx_ov_fp32", "onnx_ov_default",
         "onnx_ov_int8")
# The packages each peer needs besides torch.
NEEDS = {"onnx_ort_fp32": ("onnx", "onnxruntime"), "onnx_ort_int8": ("onnx", "onnxruntime"),
         "onnx_ov_fp32": ("onnx", "openvino"), "onnx_ov_default": ("onnx", "openvino"),
         "onnx_ov_int8": ("onnx", "openvino", "nncf")}


def installed(names):
    return all(importlib.util.find_spec(name) is not None for name in names)


def calibrated_torch_net(arch, crops):
    """(the PyTorch network with BatchNorm running statistics = its batch statistics on
    ``crops`` (N, 3, H, W) float32, in eval mode, torch), or (None, None) without torch."""
    net, torch = torch_peer(arch)
    if net is None:
        return None, None
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0  # running statistics := this batch's
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(crops))
    for m in norms:
        m.momentum = 0.1
    return net.eval(), torch


def export_onnx(net, torch, path):
    """``net`` -> an ONNX file at ``path`` (input 'image' (N, 3, H, W), output 'heatmaps'),
    through the TorchScript exporter (the dynamo one needs onnxscript)."""
    torch.onnx.export(net, (torch.zeros(1, 3, *INPUT_SIZE),), path, dynamo=False,
                      input_names=["image"], output_names=["heatmaps"], opset_version=17,
                      dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}})
    return path


def _ort_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})[0]


def _ort_int8(path, calibration, workdir):
    """Static QDQ int8 (uint8 activations, int8 per-channel weights: x86's fast path) of the
    ONNX model at ``path``, calibrated on ``calibration`` (N, 3, H, W)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": crop[None]} for crop in calibration])

        def get_next(self):
            return next(self.items, None)

    prepared = os.path.join(workdir, "prepared.onnx")
    quant_pre_process(path, prepared)
    out = os.path.join(workdir, "model_int8_qdq.onnx")
    quantize_static(prepared, out, Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _ov_runner(model, threads, precision=None):
    from mrpose_tf.export.openvino import compile_openvino, run_openvino

    compiled = compile_openvino(model, threads, precision)
    return (lambda x: run_openvino(compiled, x),
            compiled.get_property("INFERENCE_PRECISION_HINT").to_string())


def peer_runners(arch, names, threads, one, sixteen, workdir, calibration_crops=4):
    """{peer: (batch-1 fn, batch-16 fn)} for the peers in ``names`` that are installed.

    Args:
      arch: the architecture.
      names: a subset of :data:`PEERS`.
      threads: threads of every runtime.
      one, sixteen: (1, H, W, 3) and (16, H, W, 3) float32 crops (NHWC, ours); the peers get
        them as NCHW. BatchNorm is set on the first 4 of ``sixteen``, as ours.
      workdir: folder for the ONNX files.
      calibration_crops: how many of ``sixteen`` calibrate the int8 peers.

    Returns:
      (runners, notes): notes has 'versions' {package: version} and 'precision' {peer:
      the OpenVINO inference precision it ran in}.
    """
    import numpy as np

    names = [n for n in names if n in PEERS and installed(NEEDS.get(n, ()) + ("torch",))]
    one = np.ascontiguousarray(one.transpose(0, 3, 1, 2))
    sixteen = np.ascontiguousarray(sixteen.transpose(0, 3, 1, 2))
    net, torch = calibrated_torch_net(arch, sixteen[:4])
    runners, notes = {}, {"versions": {}, "precision": {}}
    if net is None:
        return runners, notes
    notes["versions"]["torch"] = torch.__version__
    torch.set_num_threads(threads)
    if "torch" in names:
        def run(x):
            with torch.no_grad():
                net(torch.from_numpy(x))

        runners["torch"] = (lambda: run(one), lambda: run(sixteen))
    if not any(n.startswith("onnx_") for n in names):
        return runners, notes
    path = export_onnx(net, torch, os.path.join(workdir, f"{arch}.onnx"))
    fns = {}
    if "onnx_ort_fp32" in names:
        fns["onnx_ort_fp32"] = _ort_session(path, threads)
    if "onnx_ort_int8" in names:
        fns["onnx_ort_int8"] = _ort_session(
            _ort_int8(path, sixteen[:calibration_crops], workdir), threads)
    for name, precision in (("onnx_ov_fp32", "f32"), ("onnx_ov_default", None)):
        if name in names:
            fns[name], notes["precision"][name] = _ov_runner(path, threads, precision)
    if "onnx_ov_int8" in names:
        import nncf
        import openvino as ov

        calibration = [crop[None] for crop in sixteen[:calibration_crops]]
        quantized = nncf.quantize(ov.Core().read_model(path), nncf.Dataset(calibration),
                                  subset_size=len(calibration))
        fns["onnx_ov_int8"], notes["precision"]["onnx_ov_int8"] = _ov_runner(quantized, threads)
    for name, fn in fns.items():
        runners[name] = (lambda fn=fn: fn(one), lambda fn=fn: fn(sixteen))
    for package in ("onnx", "onnxruntime", "openvino", "nncf"):
        if importlib.util.find_spec(package) is not None:
            notes["versions"][package] = __import__(package).__version__
    return runners, notes
