# PLANTED by a hostile shared-results archive (tests/test_hostile_share.py). Snakemake runs a
# rules file as Python when it parses the workflow: if this file ever reaches workflow/rules/ and
# is parsed, it leaves the marker below beside the Snakefile, which the tests look for.
from pathlib import Path as _Path

_Path(workflow.basedir, "PLANTED_CODE_RAN").write_text("a shared file was executed\n")
