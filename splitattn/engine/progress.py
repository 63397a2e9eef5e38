"""Where a run stands, in units that survive a change of the number of processes or of the batch size.

A checkpoint stores ``step`` (optimizer steps), ``global_batch`` (images per step), ``images_seen`` (images
trained since the run began), ``epoch`` (the pass in progress: passes completed) and ``epoch_images``
(images of that pass already trained; ``engine.data`` draws a pass from any image on).

Resumed with the same global batch (whatever the processes, batch per process and accumulation that make
it up) the run continues at the saved step: with as many processes it is the uninterrupted run, bit for
bit. With another global batch:

- a run whose schedule counts epochs (classification, segmentation) trains the images its pass has left
  (in another order: the ranks split the rest of the pass anew), in full global batches (what does not
  fill one is dropped, as at the end of every pass), and continues at the step of its own schedule at
  which as much of the epoch remains: ``epoch x steps_per_epoch + steps_per_epoch - remaining steps``.
  The run still ends after ``--epochs`` passes; the learning rate follows the epochs.
- a run whose schedule counts iterations (detection: ``--max-iter``, ``--steps``, ``--warmup-iters``) keeps
  them in iterations of its own global batch: it continues at iteration ``images_seen / global batch``,
  the images seen so far divided by the images of one of its iterations. When that is not a whole number
  the resume is refused (the optimizer cannot take part of a step), naming the batch sizes that fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..errors import UsageError


@dataclass
class Progress:
    """A run's position: optimizer ``step``, the pass ``epoch`` in progress, ``epoch_images`` of it already
    trained and ``images_seen`` in all."""

    step: int = 0
    epoch: int = 0
    epoch_images: int = 0
    images_seen: int = 0

    def advance(self, global_batch: int, pass_length: int) -> bool:
        """Count one optimizer step of ``global_batch`` images; True when the pass ended with it (fewer than
        ``global_batch`` of its ``pass_length`` images are left), so the next step starts the next pass."""
        self.step += 1
        self.images_seen += global_batch
        self.epoch_images += global_batch
        if pass_length - self.epoch_images < global_batch:
            self.epoch, self.epoch_images = self.epoch + 1, 0
            return True
        return False

    def entries(self, global_batch: int) -> Dict[str, int]:
        """The checkpoint entries of this position for a run of ``global_batch`` images per step."""
        return dict(
            step=self.step,
            epoch=self.epoch,
            epoch_images=self.epoch_images,
            images_seen=self.images_seen,
            global_batch=global_batch,
        )


def resume_progress(
    checkpoint: Dict[str, Any],
    global_batch: int,
    pass_length: int,
    steps_per_epoch: int,
    by_epoch: bool,
    world_size: int,
    source: str,
) -> Tuple[Progress, Optional[str]]:
    """This run's position after ``checkpoint`` (read from ``source``) and, when its global batch differs
    from the checkpoint's, a note saying how the run continues (see the module's text).

    Args:
        checkpoint: a run checkpoint; one without ``global_batch`` (written before it had one) is taken to
            have this run's global batch.
        global_batch: images per optimizer step of this run.
        pass_length: images in one pass of this run's data.
        steps_per_epoch: optimizer steps of one pass in this run (``pass_length // global_batch``).
        by_epoch: whether the schedule counts epochs (else iterations).
        world_size: processes of this run (to suggest batch sizes in an error).
        source: the checkpoint's path, for messages.

    Raises:
        UsageError: an iteration-based run whose images seen are not a whole number of its iterations.
    """
    step = int(checkpoint["step"])
    saved_batch = int(checkpoint.get("global_batch") or global_batch)
    if "images_seen" not in checkpoint:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        return Progress(step, epoch, in_epoch * global_batch, step * global_batch), None
    saved = Progress(step, int(checkpoint["epoch"]), int(checkpoint["epoch_images"]), int(checkpoint["images_seen"]))
    if saved_batch == global_batch:
        return saved, None
    left = max(0, pass_length - saved.epoch_images)
    if by_epoch:
        remaining = left // global_batch
        progress = Progress(
            saved.epoch * steps_per_epoch + steps_per_epoch - remaining,
            saved.epoch,
            saved.epoch_images,
            saved.images_seen,
        )
        where = f"step {progress.step} of its schedule"
    else:
        if saved.images_seen % global_batch:
            fits = [b for b in range(1, 257) if saved.images_seen % (b * world_size) == 0][-4:]
            raise UsageError(
                f"{source} was written after {saved.images_seen} images ({step} iterations of {saved_batch}); "
                f"at {global_batch} images per iteration that is iteration {saved.images_seen / global_batch:.2f}, "
                f"not a whole one. Resume with a batch that divides {saved.images_seen} images (--batch-size "
                f"{' or '.join(map(str, fits))} with {world_size} process(es)), or from a checkpoint written at "
                "another iteration."
            )
        remaining = left // global_batch
        progress = Progress(saved.images_seen // global_batch, saved.epoch, saved.epoch_images, saved.images_seen)
        where = f"iteration {progress.step} (the {saved.images_seen} images seen / {global_batch})"
    if remaining == 0:
        progress.epoch, progress.epoch_images = progress.epoch + 1, 0
    note = (
        f"{source} was trained with {saved_batch} images per step, this run takes {global_batch}: it continues "
        f"at {where}, with the {left} images pass {saved.epoch + 1} has left ({remaining} full step"
        f"{'s' if remaining != 1 else ''}, in a new order; the rest is dropped as at the end of every pass)."
    )
    return progress, note
