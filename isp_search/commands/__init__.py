"""Subcommands of ``isp-search``: each module here exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (returning an exit code) as a default.

:data:`COMMANDS` names each subcommand's module and its one-line help, so the CLI lists every command without
importing any and imports only the one it runs (``isp-search --help`` answers at once; torch, Ray and the search
load only for the commands that use them). ``tests/test_cli.py`` checks the table against the modules.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    'bench': ('bench',
              'measure latency: LiteRT/XNNPACK, ONNX Runtime and PyTorch on CPU, or a phone over adb'),
    'bench-data': ('bench_data',
                   "items/s of the data pipeline (files, pack, DataLoader) against the step's consumption"),
    'bench-driver': ('bench_driver',
                     "run the search's driver (Optuna, MOASHA, Ray Tune) on stand-in trials: gaps, sampler time, "
                     'CPU, journal'),
    'bench-scheduler': ('bench_scheduler',
                        'compare early stopping (MOASHA, ASHA, none, random search) at one budget on curves with a '
                        'known front'),
    'bench-train': ('bench_train',
                    'profile a training step: time split, FLOPs vs the floor and the textbook DLA'),
    'check-method': ('check_method',
                     'check that unpaired training learns a known colour shift (random frozen nets, CPU)'),
    'data': ('data',
             'build the synthetic data set or check a data set folder'),
    'demo': ('demo',
             'run search_spaces/demo.yaml end to end on CPU: pretrain, search, baselines, export, report'),
    'eval': ('eval',
             'evaluate a model: PSNR, SSIM, MS-SSIM, LPIPS, DISTS on a split'),
    'export': ('export',
               'export a model to ONNX and TFLite (fp32/fp16/int8) with parity and op-list gates'),
    'leaderboard': ('leaderboard',
                    'show the leaderboard of exported models, write its HTML report, or add a baseline'),
    'predict': ('predict',
                'run a model on a RAW PNG/DNG and write the RGB image'),
    'prepare': ('prepare',
                'build every reference cache a search space or training config needs (once, in parallel)'),
    'search': ('search',
               'run or resume a multi-objective hyper-parameter search (Ray Tune + Optuna) from a space YAML'),
    'study-value': ('study_value',
                    'what finished studies were worth: baselines vs confirmed best, hypervolume by trial count, '
                    'where time went'),
    'train': ('train',
              'train a generator (pretrain, paired_noadv, paired or unpaired) from a YAML config'),
    'weights': ('weights',
                'show or fetch the pretrained feature-network weights'),
}
