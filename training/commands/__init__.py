"""The `conla` commands that need torch, one module each: `train_lam`, `train_vla`, `train_policy`,
`label`, `export` (all three exports), `eval_lam`, `bench_lam` and `bench_policy`.

A command module has `add_arguments(parser)` and `run(args)` (conla_ros.cli loads it only when its
command runs) and a `main(argv)` for `python -m conla_training.commands.<module>`. The work itself
lives in trainers/, exports/, models/ and datasets/.
"""
