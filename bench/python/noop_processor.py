#!/usr/bin/env python3
"""The no-op record processor of the MultiLangDaemon benchmark (amazon-kclpy v3 interface).

It does nothing with the records; it checkpoints at the last record of every batch, at shard
end and when a shutdown is requested. For the benchmark it appends one line per non-empty
batch to the file named by KCL_BENCH_OUT:

    <time.time() at entry> <time.time() after the checkpoint> <records in the batch> <pid>

and, in initialize, one line `init <time.time()>`.

Run by kcl-multilang (executableName), or fed protocol lines on stdin directly (the ceiling).
"""

import os
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

OUT = os.environ.get("KCL_BENCH_OUT") or None

# Section 12's split placement: this child runs on the CPU named here, whatever CPUs the daemon
# that started it is confined to.
CPU = os.environ.get("KCL_BENCH_CHILD_CPU")
if CPU:
    os.sched_setaffinity(0, {int(CPU)})


class NoopProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.out = open(OUT, "a", buffering=1) if OUT else None

    def initialize(self, initialize_input):
        if self.out:
            self.out.write("init %.6f\n" % time.time())

    def process_records(self, process_records_input):
        start = time.time()
        records = process_records_input.records
        if not records:
            return
        last = records[-1]
        process_records_input.checkpointer.checkpoint(last.sequence_number, last.sub_sequence_number)
        if self.out:
            self.out.write("%.6f %.6f %d %d\n" % (start, time.time(), len(records), os.getpid()))

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(NoopProcessor()).run()
