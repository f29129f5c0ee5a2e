"""Run a federated (or central) recommendation simulation: ``python simulate.py --help``."""

from __future__ import annotations

import argparse
import logging
import sys

from federation.config import BACKENDS, DEVICES, MODES, ConfigError, SimulationConfig
from federation.plugins import PROFILE_ATTACK_PRESETS
from harness.cli import CommandParser, guarded, parse

DEFAULTS = SimulationConfig()


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from federation.plugins import AGGREGATION_RULES
    from recsys.data import DATASET_NAMES

    p = CommandParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=DEFAULTS.dataset, choices=DATASET_NAMES, help="dataset name")
    data.add_argument("--data-dir", default="", help="folder laid out like shared/datasets (else $FEDREC_DATA_DIR, "
                      "else the cache ~/.cache/fedrec-sim/datasets)")
    data.add_argument("--synthetic-users", type=int, default=DEFAULTS.synthetic_users, help="synthetic: number of users")
    data.add_argument("--synthetic-items", type=int, default=DEFAULTS.synthetic_items, help="synthetic: number of items")
    data.add_argument("--synthetic-items-per-user", type=int, default=DEFAULTS.synthetic_items_per_user,
                      help="synthetic: mean interactions per user")
    data.add_argument("--split-seed", type=int, default=DEFAULTS.split_seed,
                      help="-1: the dataset's own train/test split; else each user's items shuffled with this seed and "
                      "split again (the same number of test items per user)")
    run = p.add_argument_group("run")
    run.add_argument("--mode", default=DEFAULTS.mode, choices=MODES, help="federated, or central (one client holding every user)")
    run.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="epochs (each visits every client once)")
    run.add_argument("--seed", type=int, default=DEFAULTS.seed, help="the one seed that fixes every random draw")
    run.add_argument("--out", default=DEFAULTS.out, help="run folder for config.json, metrics.jsonl/csv, metrics.png")
    run.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, help="epochs between checkpoints (0: none)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace the run already in --out (else refused)")
    run.add_argument("--max-rejected", type=float, default=DEFAULTS.max_rejected, metavar="FRACTION",
                     help="stop the run (exit 1) when a round rejects more than this share of its uploads; "
                          "a round that rejects every upload always stops it")
    model = p.add_argument_group("model and training (paper defaults)")
    model.add_argument("--dim", type=int, default=DEFAULTS.dim, help="user/item embedding size")
    model.add_argument("--layers", type=_ints, default=DEFAULTS.layers, help="MLP hidden widths, e.g. 8,8")
    model.add_argument("--negatives", type=int, default=DEFAULTS.negatives, help="r: sampled negatives per positive")
    model.add_argument("--lr", type=float, default=DEFAULTS.lr, help="η for Θ (server) and p_u (clients)")
    model.add_argument("--clients-per-round", type=int, default=DEFAULTS.clients_per_round, help="clients sampled per round")
    model.add_argument("--client-strategy", action="append", default=[], metavar="SPEC[@IDS]",
                       help="client behaviour: a registered name, package.module:Class or file.py:Class, optionally "
                            "for client ids IDS (e.g. 0-99,250); repeatable; default honest")
    model.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                       help="free-form option for plug-in strategies (config.extra); repeatable")
    attack = p.add_argument_group("malicious clients (Rong et al. 2022, sections 3 and 5.1)")
    attack.add_argument("--attack", default=DEFAULTS.attack,
                        help="strategy of the injected malicious clients: none, a-ra, a-hum, eb, ra, or a plug-in "
                             "SPEC (package.module:Class / file.py:Class)")
    attack.add_argument("--malicious-frac", type=float, default=DEFAULTS.malicious_frac,
                        help="ρ: inject floor(N_benign·ρ) malicious clients (paper: 0.005 on fed-ml, 0.001 on fed-az)")
    attack.add_argument("--attack-scale", type=float, default=DEFAULTS.attack_scale, help="α: multiplies every malicious upload")
    attack.add_argument("--approx-users", type=int, default=DEFAULTS.approx_users, help="n: approximated user vectors (A-ra, A-hum)")
    attack.add_argument("--approx-sigma", type=float, default=DEFAULTS.approx_sigma, help="σ: p̂ ~ N(0, σ²)")
    attack.add_argument("--mining-lr", type=float, default=DEFAULTS.mining_lr, help="ξ: hard-user-mining step (A-hum)")
    attack.add_argument("--mining-steps", type=int, default=DEFAULTS.mining_steps, help="β: hard-user-mining iterations (A-hum)")
    attack.add_argument("--fake-profile-items", type=int, default=DEFAULTS.fake_profile_items,
                        help="RA: items of a fake profile, targets included")
    attack.add_argument("--profile-preset", default=DEFAULTS.profile_preset, choices=PROFILE_ATTACK_PRESETS,
                        help="profile:revadv(+sharpap): the gradient attack's settings (attacks.implicit.PRESETS)")
    defense = p.add_argument_group("server aggregation (defenses/federated, docs/federated-defenses.md)")
    defense.add_argument("--aggregation", default=DEFAULTS.aggregation, metavar="RULE",
                         help=f"server rule: {', '.join(AGGREGATION_RULES)}, or a plug-in package.module:Class / file.py:Class")
    defense.add_argument("--aggregation-scope", default=DEFAULTS.aggregation_scope, choices=("row", "vector"),
                         help="row: each item row over its uploaders and each MLP tensor; vector: whole uploads")
    defense.add_argument("--assumed-malicious", default=DEFAULTS.assumed_malicious, metavar="POLICY",
                         help="f per group: fraction:β, oracle (the true count) or bound:F")
    defense.add_argument("--trim-fraction", type=float, default=DEFAULTS.trim_fraction, help="trimmed-mean: β per tail")
    defense.add_argument("--clip-row", type=float, default=DEFAULTS.clip_row,
                         help="absolute τ for item rows (dp-clip: whole uploads); 0: the round's --clip-quantile")
    defense.add_argument("--clip-mlp", type=float, default=DEFAULTS.clip_mlp,
                         help="absolute τ for MLP neurons/biases; 0: the round's --clip-quantile")
    defense.add_argument("--clip-quantile", type=float, default=DEFAULTS.clip_quantile,
                         help="τ = this quantile of the round's uploaded norms when no absolute τ is given")
    defense.add_argument("--clip-iterations", type=int, default=DEFAULTS.clip_iterations, help="centered-clip iterations")
    defense.add_argument("--dp-noise-multiplier", type=float, default=DEFAULTS.dp_noise_multiplier,
                         help="dp-clip: noise std = multiplier × τ")
    defense.add_argument("--gate-threshold", type=float, default=DEFAULTS.gate_threshold,
                         help="row-gate: z-score of an item row's uploader count above its running mean")
    metrics = p.add_argument_group("metrics")
    metrics.add_argument("--top-k", type=int, default=DEFAULTS.top_k, help="K of HR/Precision/NDCG")
    metrics.add_argument("--er-ks", type=_ints, default=DEFAULTS.er_ks, help="K values of ER@K")
    metrics.add_argument("--targets", type=_ints, default=(), help="target item ids (default: the T least popular items)")
    metrics.add_argument("--num-targets", type=int, default=DEFAULTS.num_targets, help="T, when --targets is not given")
    backend = p.add_argument_group("execution")
    backend.add_argument("--backend", default=DEFAULTS.backend, choices=BACKENDS,
                         help="inprocess: lean single-machine transport; ray: Flower's simulation engine (many cores, clusters)")
    backend.add_argument("--shards", type=int, default=DEFAULTS.num_shards, help="supernodes hosting the clients (0: one in process, one per core with Ray)")
    backend.add_argument("--num-cpus", type=float, default=DEFAULTS.client_num_cpus, help="ray: CPUs per ClientApp actor")
    backend.add_argument("--num-gpus", type=float, default=DEFAULTS.client_num_gpus, help="ray: GPUs per ClientApp actor")
    backend.add_argument("--device", default=DEFAULTS.device, choices=DEVICES, help="torch device (auto: cuda if available)")
    backend.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    extra = {}
    for item in args.strategy_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--strategy-option expects KEY=VALUE, got {item!r}")
        extra[key] = value
    return SimulationConfig(
        dataset=args.dataset, data_dir=args.data_dir, synthetic_users=args.synthetic_users,
        synthetic_items=args.synthetic_items, synthetic_items_per_user=args.synthetic_items_per_user,
        split_seed=args.split_seed, mode=args.mode,
        epochs=args.epochs, seed=args.seed, dim=args.dim, layers=args.layers, negatives=args.negatives, lr=args.lr,
        clients_per_round=args.clients_per_round, aggregation=args.aggregation, top_k=args.top_k, er_ks=args.er_ks,
        targets=args.targets, num_targets=args.num_targets, client_strategies=tuple(args.client_strategy),
        attack=args.attack, malicious_frac=args.malicious_frac, attack_scale=args.attack_scale,
        approx_users=args.approx_users, approx_sigma=args.approx_sigma, mining_lr=args.mining_lr,
        mining_steps=args.mining_steps, fake_profile_items=args.fake_profile_items,
        profile_preset=args.profile_preset,
        aggregation_scope=args.aggregation_scope, assumed_malicious=args.assumed_malicious,
        trim_fraction=args.trim_fraction, clip_row=args.clip_row, clip_mlp=args.clip_mlp, clip_quantile=args.clip_quantile,
        clip_iterations=args.clip_iterations, dp_noise_multiplier=args.dp_noise_multiplier,
        gate_threshold=args.gate_threshold,
        num_shards=args.shards, backend=args.backend, client_num_cpus=args.num_cpus, client_num_gpus=args.num_gpus,
        device=args.device, out=args.out, checkpoint_every=args.checkpoint_every, resume=args.resume, extra=extra,
        overwrite=args.overwrite, max_rejected=args.max_rejected,
    )


@guarded(interrupted="interrupted; resume with --resume")
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from harness.runner import run

    run(config_from_args(args), echo=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
