"""User-facing errors: one line, non-zero exit, no traceback (STYLE rule 11)."""

import re

# Under `ray job submit --working-dir DIR`, the job runs in a copy of DIR in Ray's session folder; paths inside it
# are shown relative to DIR, as the user typed them, not as that temporary copy.
_JOB_COPY = re.compile(r"/\S*?/runtime_resources/working_dir_files/_ray_pkg_[0-9a-f]+/")


def as_the_user_knows_it(message: str) -> str:
    """``message`` with every path inside a Ray job's copy of its working dir made relative to that dir."""
    return _JOB_COPY.sub("", message)


class UserError(Exception):
    """A mistake in the user's input (file, key, value). The CLI prints it as one line and exits with 2."""

    exit_code = 2
