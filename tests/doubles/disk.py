"""Filling a file system, for full-disk tests (importable by the test double inside a framework's environment)."""


def fill(directory):
    """Fill the file system under `directory` to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
