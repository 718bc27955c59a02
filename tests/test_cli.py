"""The programs: every command answers --help with its flags, every flag of the README's
commands exists, the console scripts are installed, the benchmark flags parse as documented,
and ``mrpose_tf.train`` trains in-process.
"""
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_SCRIPTS = {"mrpose-train": "mrpose_tf.cli.train:run",
                   "mrpose-evaluate": "mrpose_tf.cli.evaluate:run",
                   "mrpose-export": "mrpose_tf.cli.export:run",
                   "mrpose-demo": "mrpose_tf.cli.demo:run",
                   "mrpose-convert": "mrpose_tf.cli.convert:run",
                   "mrpose-benchmark": "mrpose_tf.benchmarks:main"}
# Each program's command line, and flags its --help must list (its own, not absl's).
PROGRAMS = {
    "scripts/train.py": ["--config", "--workdir", "--[no]evaluate"],
    "scripts/evaluate.py": ["--checkpoint", "--saved_model", "--[no]flip_test", "--strategy"],
    "scripts/export.py": ["--checkpoint", "--output_dir", "--formats"],
    "scripts/demo.py": ["--checkpoint", "--image", "--boxes"],
    "scripts/convert_weights.py": ["--checkpoint", "--workdir", "--style"],
    "scripts/model_table.py": ["--backbone", "--input_size", "--num_joints"],
    "scripts/visualize_data.py": ["--dataset", "--output", "--mode"],
    "scripts/kill_resume_check.py": ["--workdir", "--kill_after_step"],
    "scripts/benchmark.py": ["pipeline", "inference", "keras"],
    "scripts/benchmark.py inference": ["--json", "--archs", "--runtimes", "--[no]naive_tflite"],
    "scripts/benchmark.py train": ["--input_size", "--transposed_conv", "--[no]jit"],
    "export/tflite_infer.py": ["--model", "--image", "--boxes"],
    "export/serving_client.py": ["--server", "--image", "--boxes"],
}
# The program behind each command the README may use.
README_PROGRAMS = {
    "mrpose-train": "scripts/train.py", "mrpose-evaluate": "scripts/evaluate.py",
    "mrpose-export": "scripts/export.py", "mrpose-demo": "scripts/demo.py",
    "mrpose-convert": "scripts/convert_weights.py", "mrpose-benchmark": "scripts/benchmark.py",
    **{program: program for program in PROGRAMS if " " not in program},
}


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def help_texts():
    """{program: its --help output}, all started at once."""
    processes = {program: subprocess.Popen(
        [sys.executable, *program.split(maxsplit=1)[:1], *program.split()[1:], "--help"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=_env())
        for program in PROGRAMS}
    return {program: process.communicate(timeout=180)[0]
            for program, process in processes.items()}


def test_every_program_lists_its_flags_in_help(help_texts):
    for program, out in help_texts.items():
        missing = [flag for flag in PROGRAMS[program] if flag not in out]
        assert not missing, f"{program} --help lacks {missing}:\n{out[-2000:]}"
        assert "Traceback" not in out, out


def _readme_commands():
    """[(program, [flag words])] of the README's bash and python blocks (continuations joined)."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = [line.split(" #")[0] for line in block.replace("\\\n", " ").splitlines()
                 if not line.lstrip().startswith("#")]
        for part in (p.strip() for line in lines for p in line.split("&&")):
            words = part.split()
            if words and words[0] in ("python", "python3") and len(words) > 1:
                words = words[1:]
            if not words or words[0] not in README_PROGRAMS:
                continue
            program = README_PROGRAMS[words[0]]
            if program == "scripts/benchmark.py":
                program, words = f"{program} {words[1]}", words[1:]
            commands.append((program, [w for w in words[1:] if w.startswith("--")]))
    return commands


def test_every_flag_in_the_readme_commands_exists(help_texts):
    import mrpose_tf

    commands = _readme_commands()
    assert len(commands) >= 10, commands  # the parser found the README's commands
    for program, words in commands:
        assert program in help_texts, f"README runs {program}, which this test does not know"
        defined = set(re.findall(r"--(?:\[no\])?(\w+)", help_texts[program]))
        config_path = next((w.split("=", 1)[1] for w in words if w.startswith("--config=")), None)
        for word in words:
            name = word[2:].split("=", 1)[0]
            if name.startswith("config."):
                assert config_path, f"README: {program} {word} without --config="
                *parents, leaf = name.split(".")[1:]
                node = mrpose_tf.load_config(os.path.join(REPO_ROOT, config_path))
                for parent in parents:
                    node = node[parent]
                assert leaf in node, f"README: {program} {word}: no such config field"
                continue
            flag = name[2:] if name.startswith("no") and name[2:] in defined else name
            assert flag in defined, f"README: {program} has no flag --{name}"


def test_console_scripts_are_installed_and_run():
    try:
        distribution = importlib.metadata.distribution("mrpose_tf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mrpose_tf is not installed (pip install -e .)")
    scripts = {ep.name: ep.value for ep in distribution.entry_points
               if ep.group == "console_scripts"}
    assert scripts == CONSOLE_SCRIPTS, "reinstall (pip install -e .) after changing setup.py"
    executable = shutil.which("mrpose-train",
                              path=os.path.dirname(sys.executable) + os.pathsep
                              + os.environ.get("PATH", ""))
    if executable is None:
        pytest.skip("the console scripts are not on PATH")
    out = subprocess.run([executable, "--helpfull"], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert "--workdir" in out.stdout + out.stderr and "--config" in out.stdout + out.stderr


def test_benchmark_flags_parse_comma_lists_and_refuse_bad_items(capsys):
    from absl import flags

    from mrpose_tf.benchmarks import main, train

    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["prog", "--archs=mrfeanet2", "--input_size=96,64", "--transposed_conv=auto,native",
        "--nojit"])
    assert fv.archs == ["mrfeanet2"] and fv.input_size == [96, 64]
    assert fv.transposed_conv == ["auto", "native"] and fv.jit is False
    for bad, named in ((["train", "--archs=resnet"], "--archs"),
                       (["train", "--input_size=96"], "--input_size"), (["nope"], "'nope'")):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code not in (0, None)
        _, err = capsys.readouterr()
        assert named in err + str(exit_info.value.code), (bad, err)


def test_python_api_trains_a_tiny_config_and_returns_its_metrics(tmp_path, small_network):
    import mrpose_tf

    config = mrpose_tf.load_config(
        os.path.join(REPO_ROOT, "configs", "coco", "simple_baseline_resnet50_256x192.py"),
        {"dataset.name": "random", "model.input_size": (64, 64), "model.heatmap_size": (16, 16),
         "model.backbone_weights": "", "train.batch_size": 2, "train.max_steps": 2,
         "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
         "train.strategy": "one_device", "train.precision": "float32"})
    lines = []
    result = mrpose_tf.train(config, str(tmp_path), evaluate=False, log=lines.append)
    assert result["step"] == 2 and result["stopped"] == "max_steps"
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train_rows = [row for row in rows if row["split"] == "train"]
    assert [row["step"] for row in train_rows] == [1, 2]
    assert np.isfinite(result["last_loss"]) and result["last_loss"] == train_rows[-1]["loss"]
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["train"]["max_steps"] == 2 and saved["train"]["strategy"] == "one_device"
    assert "float32" in lines[0] and "1 replica(s)" in lines[0]


def test_python_api_runs_the_quickstart_recipe_end_to_end_on_a_tiny_set(tmp_path, small_network):
    """configs/quickstart.py through mrpose_tf.train, shrunk: renders the synthetic set, trains,
    evaluates (pycocotools), writes metrics.json and the matplotlib learning curve."""
    import cv2

    import mrpose_tf

    root = str(tmp_path / "synthetic")
    config = mrpose_tf.load_config(
        os.path.join(REPO_ROOT, "configs", "quickstart.py"),
        {"dataset.root": root, "dataset.synthetic.num_train": 6, "dataset.synthetic.num_val": 3,
         "train.batch_size": 4, "train.max_steps": 3, "train.log_every_steps": 1,
         "train.eval_every_epochs": 1, "train.strategy": "one_device",
         "train.precision": "float32", "finish.export_formats": "", "finish.demo_images": 0})
    workdir = tmp_path / "run"
    metrics = mrpose_tf.train(config, str(workdir), log=lambda line: None)
    with open(workdir / "metrics.json") as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert metrics["steps"] == 3 and 0.0 <= metrics["AP"] <= 1.0
    assert [row["step"] for row in metrics["learning_curve"]["train"]] == [1, 2, 3]
    picture = cv2.imread(str(workdir / "learning_curve.png"))
    assert picture is not None and picture.shape == (600, 900, 3)
