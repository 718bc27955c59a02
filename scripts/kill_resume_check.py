"""kill -9 a training run, rerun the same command: it must resume and no checkpoint is corrupt.

  python scripts/kill_resume_check.py --workdir=/tmp/kill_check [--steps=6 --kill_after_step=3]

Runs scripts/train.py on the in-memory random set (simple_baseline/resnet50, 64x64, batch 4,
a checkpoint every step, so the kill often lands during a save), SIGKILLs it once the
workdir lists a checkpoint at or after --kill_after_step, checks every listed checkpoint
reads back completely, reruns the same command to --steps and checks that it resumed at
the last listed checkpoint and that the final checkpoints read back. Prints PASS or FAIL.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("workdir", None, "Run directory (emptied first).")
flags.DEFINE_integer("steps", 6, "Total training steps.")
flags.DEFINE_integer("kill_after_step", 3, "SIGKILL once a checkpoint of this step exists.")
flags.DEFINE_integer("timeout", 600, "Seconds allowed for each training process.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_command(workdir, steps):
    config = os.path.join(REPO_ROOT, "configs", "coco", "simple_baseline_resnet50_256x192.py")
    return [sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"), f"--config={config}",
            f"--workdir={workdir}", "--config.train.strategy=one_device",
            "--config.train.precision=float32",
            "--config.dataset.name=random", "--config.model.input_size=(64,64)",
            "--config.model.heatmap_size=(16,16)", "--config.model.backbone_weights=",
            "--config.train.batch_size=4", f"--config.train.max_steps={steps}",
            "--config.train.checkpoint_every_steps=1", "--config.train.log_every_steps=1",
            "--config.train.keep_checkpoints=2", "--noevaluate"]


def listed_checkpoints(workdir):
    """Step numbers of the checkpoints the state file lists (the ones a resume may use)."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    if state is None:
        return []
    return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def check_readable(workdir):
    """Reads every tensor of every listed checkpoint; returns their steps (raises if corrupt)."""
    import tensorflow as tf

    steps = listed_checkpoints(workdir)
    for step in steps:
        prefix = os.path.join(workdir, "checkpoints", f"ckpt-{step}")
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        saved_step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
        if saved_step != step:
            raise ValueError(f"{prefix} holds step {saved_step}")
    return steps


def run_and_kill(command, workdir, kill_after_step, timeout):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            steps = listed_checkpoints(workdir) if os.path.isdir(workdir) else []
            if steps and max(steps) >= kill_after_step:
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    return process.returncode, output


def main(argv):
    del argv
    workdir = os.path.abspath(FLAGS.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    command = train_command(workdir, FLAGS.steps)
    code, output = run_and_kill(command, workdir, FLAGS.kill_after_step, FLAGS.timeout)
    if code != -signal.SIGKILL:
        print(output[-3000:])
        print(f"FAIL: the first run was not killed (exit status {code})")
        return 1
    steps = check_readable(workdir)
    print(f"killed with -9; listed checkpoints {steps} all read back")
    if not steps:
        print("FAIL: no checkpoint before the kill")
        return 1
    rerun = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=FLAGS.timeout)
    output = rerun.stdout.decode(errors="replace")
    resumed = re.search(r"resumed from \S+ at step (\d+)", output)
    final = re.search(r"stopped \(\w+\) at step (\d+)", output)
    if rerun.returncode != 0 or not resumed or not final:
        print(output[-3000:])
        print(f"FAIL: the rerun exited with {rerun.returncode} or did not report resume/stop")
        return 1
    final_steps = check_readable(workdir)
    ok = int(resumed.group(1)) == max(steps) and int(final.group(1)) == FLAGS.steps \
        and max(final_steps) == FLAGS.steps
    print(f"rerun resumed at step {resumed.group(1)} (last listed {max(steps)}), stopped at "
          f"step {final.group(1)}; final checkpoints {final_steps} read back")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
