"""Write every generated config, README and metafile under configs/ from the family specs (see scripts/configgen/).

    python scripts/gen_configs.py                      # (re)write them (and model-index.yml, README.md's model zoo,
                                                       # docs/your_config.md)
    python scripts/gen_configs.py --check              # exit 1 and list the stale files
    python scripts/gen_configs.py --dry-run [--family KEY ...]   # print the paths it would write

The rule for hand-written configs is in scripts/configgen/__init__.py and configs/README.md.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import configgen  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare with the committed files; exit 1 if stale")
    p.add_argument("--dry-run", action="store_true", help="print the paths that would be written, write nothing")
    p.add_argument("--family", nargs="+", metavar="KEY", help="only these families (default: all)")
    p.add_argument("--no-complexity", action="store_true",
                   help="leave our params / MACs out of the folder READMEs (faster; for a look at the tables)")
    args = p.parse_args(argv)
    specs = None
    if args.family:
        from effvit_plugins.models.spec import get_family

        specs = [get_family(k) for k in args.family]  # unknown key: an error listing the valid ones
    if args.dry_run:
        index = [configgen.metafile.INDEX, configgen.your_config.PATH] if specs is None else []
        for path in list(configgen.configs(specs)) + configgen.readme_paths(specs) + configgen.metafile_paths(specs) \
                + index:
            print(path)
        return 0
    stale = configgen.run(write=not args.check, specs=specs, with_complexity=not args.no_complexity)
    if args.check:
        if stale:
            print("out of date (run python scripts/gen_configs.py):\n  " + "\n  ".join(stale))
            return 1
        print("all generated files are up to date")
        return 0
    print("\n".join(stale) + f"\n{len(stale)} files written" if stale else "nothing to write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
