"""mmcv's 'step' learning-rate policy with linear warm-up, as a pure function of (epoch, iteration)."""


class StepLrSchedule:
    def __init__(self, base_lr, step, gamma=0.1, warmup=None, warmup_iters=0, warmup_ratio=1.0, policy="step", **_):
        if policy != "step":
            raise ValueError(f"lr_config policy '{policy}' is not supported (only 'step')")
        if warmup not in (None, "linear"):
            raise ValueError(f"lr_config warmup '{warmup}' is not supported (only 'linear')")
        self.base_lr = base_lr
        self.steps = [step] if isinstance(step, int) else list(step)
        self.gamma = gamma
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio

    def lr(self, epoch, global_iter):
        """Learning rate at 0-based ``epoch`` and 0-based ``global_iter`` (iterations since the start)."""
        lr = self.base_lr * self.gamma ** sum(epoch >= s for s in self.steps)
        if self.warmup == "linear" and global_iter < self.warmup_iters:
            lr *= 1 - (1 - global_iter / self.warmup_iters) * (1 - self.warmup_ratio)
        return lr
