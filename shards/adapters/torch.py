"""A torch ``IterableDataset`` of ready batches, for ``DataLoader`` worker processes."""

from __future__ import annotations

from torch.utils.data import IterableDataset


class ActivationIterableDataset(IterableDataset):
    """Ready batches of a ``shards.Dataset``; use ``DataLoader(tds, batch_size=None)``.

    With ``num_workers > 0`` every DataLoader worker reads a disjoint share: worker ``w`` of rank
    ``r`` acts as rank ``r * num_workers + w`` of ``world_size * num_workers`` (each worker gets its
    own copy of the dataset: it pickles as its URI and reopens). Call ``set_epoch`` between epochs.

    Example::

        tds = ActivationIterableDataset(shards.open_dataset("s3://bucket/acts"), "resid.3", batch_size=4096,
                                        shuffle=True)          # or ds.torch_dataset("resid.3", ...)
        for batch in DataLoader(tds, batch_size=None, num_workers=2):
            ...
    """

    def __init__(self, ds, hooks=None, *, batch_size: int = 4096, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False, **iter_kwargs) -> None:
        self.ds, self.hooks = ds, ds.schema.resolve_hooks(hooks, ds.storage.display())  # unknown hooks fail now
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.iter_kwargs = iter_kwargs

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        kwargs = {"prefetch": 1 if workers > 1 else 2, **self.iter_kwargs}
        yield from self.ds.iter_batches(
            self.hooks, batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            rank=self.rank * workers + wid, world_size=self.world_size * workers, drop_last=self.drop_last, **kwargs)
