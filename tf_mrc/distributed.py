"""Multi-worker training through Horovod; a single-process stand-in when not launched by horovodrun.

Everything that differs between one process and N ranks goes through ``detect()``'s object, so the
training, caching and prediction code has no Horovod branches of its own.
"""


class SingleProcess:
    """The one-process case: rank 0 of 1; every collective is the identity."""
    rank = 0
    size = 1
    local_rank = 0
    is_chief = True

    def barrier(self, name="barrier"):
        """Block until every rank reaches this point (feature cache written, outputs read)."""

    def wrap_optimizer(self, optimizer, fp16_allreduce=False):
        return optimizer

    def training_hooks(self):
        return []

    def session_config(self):
        return None

    def allgather_objects(self, obj):
        """Every rank's ``obj`` in rank order."""
        return [obj]


def detect():
    """The running configuration: Horovod when launched by horovodrun/mpirun, else SingleProcess."""
    return SingleProcess()
