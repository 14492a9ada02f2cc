#!/usr/bin/env python3
"""An amazon-kclpy (v3 API) record processor for the KPL tests, run by kcl-multilang and by
the Java KCL's MultiLangDaemon alike.

Each delivered record is appended to the file named by KPL_OUTPUT as one line:

    <shard id> <sequence number> <sub-sequence number> <payload>

It checkpoints only at the user records whose payloads are listed (comma-separated) in
KPL_CHECKPOINT_AT, with their sequence *and* sub-sequence numbers (a checkpoint inside a KPL
aggregate), and at shard end. It never checkpoints on a requested shutdown, so the next owner
resumes from those checkpoints exactly.
"""
import os
import sys
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

OUTPUT = os.environ["KPL_OUTPUT"]
CHECKPOINT_AT = set(filter(None, os.environ.get("KPL_CHECKPOINT_AT", "").split(",")))


class KplProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = None
        self.out = None

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        self.out = open(OUTPUT, "a", buffering=1)

    def _checkpoint(self, checkpointer, sequence_number=None, sub_sequence_number=None):
        for _ in range(20):
            try:
                checkpointer.checkpoint(sequence_number, sub_sequence_number)
                return
            except kcl.CheckpointError as e:
                if e.value == "ThrottlingException":
                    time.sleep(0.2)
                    continue
                sys.stderr.write("checkpoint failed: %s\n" % e.value)
                return

    def process_records(self, process_records_input):
        for record in process_records_input.records:
            payload = record.binary_data.decode("utf-8", "replace")
            self.out.write("%s %s %s %s\n" % (
                self.shard_id, record.sequence_number, record.sub_sequence_number, payload))
            self.out.flush()
            if payload in CHECKPOINT_AT:
                self._checkpoint(process_records_input.checkpointer,
                                 record.sequence_number, record.sub_sequence_number)

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input):
        pass


if __name__ == "__main__":
    kcl.KCLProcess(KplProcessor()).run()
