"""``hwnas train ARCH.json``: train the standalone network of an architecture or a cell genotype."""

from __future__ import annotations

from pathlib import Path

from hwnas.arch import Architecture
from hwnas.netfile import build_standalone, load_network
from hwnas.data import DEFAULT_DATASET, load_dataset
from hwnas.outputs import check_writable_folder
from hwnas.threads import TORCH_THREADS, TORCH_THREADS_HELP, use_torch_threads
from hwnas.progress import add_progress_argument
from hwnas.train import TrainConfig, train_model


def _train(args) -> int:
    arch = load_network(args.arch)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                      max_steps=args.max_steps, seed=args.seed, num_workers=args.workers)
    cfg.check()
    use_torch_threads(args.threads)
    out = check_writable_folder(args.out if args.out else Path("runs") / "train" / Path(args.arch).stem)
    splits = load_dataset(args.dataset, arch.space.params["resolution"], seed=args.seed,
                          limit_train=args.limit_train, limit_val=args.limit_val)
    if splits.num_classes != arch.space.params["num_classes"]:
        from hwnas.errors import HwnasError
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, the architecture's space has "
                         f"{arch.space.params['num_classes']}; use an architecture with "
                         f"\"space_params\": {{\"num_classes\": {splits.num_classes}}}")
    cost = arch.cost()
    print(f"training {args.arch} ({cost.flops / 1e6:.2f} MFLOPs, {cost.params / 1e6:.3f} M params) on "
          f"{splits.name}: {len(splits.train)} train / {len(splits.val)} val images, {cfg.epochs} epochs -> {out}")
    if isinstance(arch, Architecture):
        target = arch  # train_model builds it and saves arch.json
    else:
        target = build_standalone(arch)
        arch.save(out / "genotype.json")
    result = train_model(target, splits, config=cfg, out_dir=out, resume=args.resume, init_weights=args.init,
                         progress=not args.no_progress)
    print(f"validation accuracy {result.val_acc:.4f} (loss {result.val_loss:.4f})")
    print(f"weights: {result.weights_path}")
    print(f"metrics: {out / 'metrics.jsonl'}")
    if (out / "tb").is_dir():
        print(f"TensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train an architecture's or a genotype's network; weights as safetensors")
    p.add_argument("arch", help="architecture or cell genotype JSON file")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="'digits' (default, embedded) or a dataset path (folder, .tar.gz, CIFAR-10 python)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd (Nesterov momentum)")
    p.add_argument("--weight-decay", type=float, default=4e-5, help="default 4e-5")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="default 0.1")
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (quick runs)")
    p.add_argument("--limit-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--limit-val", type=int, default=None, help="use only this many validation images")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--threads", type=int, default=TORCH_THREADS, help=TORCH_THREADS_HELP)
    p.add_argument("--init", default=None,
                   help="start from this weights file, or from the supernet of a search run folder (fine-tuning)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default runs/train/<arch name>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_progress_argument(p)
    p.set_defaults(func=_train)
