"""Reading and writing the project's JSON files, with errors that name the file."""
import json
import os


def load_json(path, what="annotation file"):
    """Parse a JSON file; a missing file or bad JSON raises an error naming ``what`` and path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def atomic_write_json(path, value):
    """Writes ``value`` as JSON to ``path`` via a temporary file and a rename.

    A reader never sees a half-written file, and a crash mid-write leaves the old one.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
