"""engine/distributed.py: a failing worker ends the whole job (two gloo processes on the CPU)."""

import pytest
import torch

from ote_detection.engine import distributed as dist_utils
from ote_detection.utils.errors import OteError


def _fail_on_rank_1():
    if torch.distributed.get_rank() == 1:
        raise OteError("worker 1 found a bad file")
    torch.distributed.barrier()  # rank 0 would wait here for ever without the failure handling


@pytest.mark.slow
def test_a_failing_worker_ends_the_distributed_job():
    with pytest.raises(OteError, match="^worker 1 found a bad file$"):
        dist_utils.launch(_fail_on_rank_1, 2, use_cuda=False)
