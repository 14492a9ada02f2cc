#!/usr/bin/env python3
"""The demo's Python record processor, written against amazon-kclpy's public v3 API.

The kcl-multilang daemon starts one of these per shard. Each delivered record is appended to
the file named by KCL_DEMO_OUTPUT as one line:

    <unix micros> <pid> <shard id> <sequence number> <millis behind latest> <payload>

so the demo can check, across processes, that nothing was lost, order held per shard, and
parents finished before children. It checkpoints after every batch, at shard end (required:
the children wait for it), and when the daemon shuts down gracefully.
"""
import os
import sys
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

OUTPUT = os.environ.get("KCL_DEMO_OUTPUT", "/dev/null")


class DemoProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = None
        self.out = None

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        self.out = open(OUTPUT, "a", buffering=1)

    def _checkpoint(self, checkpointer, sequence_number=None):
        for _ in range(5):
            try:
                checkpointer.checkpoint(sequence_number)
                return
            except kcl.CheckpointError as e:
                if e.value == "ThrottlingException":
                    time.sleep(0.2)
                    continue
                # ShutdownException: the lease moved on; the next owner resumes from the last checkpoint.
                sys.stderr.write("checkpoint failed: %s\n" % e.value)
                return

    def process_records(self, process_records_input):
        lag = process_records_input.millis_behind_latest
        lines = []
        last = None
        for record in process_records_input.records:
            payload = record.binary_data.decode("utf-8", "replace")
            lines.append("%d %d %s %s %s %s\n" % (
                int(time.time() * 1_000_000), os.getpid(), self.shard_id,
                record.sequence_number, lag if lag is not None else -1, payload))
            last = record.sequence_number
        if lines:
            self.out.write("".join(lines))
            self.out.flush()
            self._checkpoint(process_records_input.checkpointer, last)

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input):
        self._checkpoint(shutdown_requested_input.checkpointer)


if __name__ == "__main__":
    kcl.KCLProcess(DemoProcessor()).run()
