#!/usr/bin/env python3
"""A record processor for the kcl-multilang daemon (amazon-kclpy v3 interface) that records
every delivery, for end-to-end tests and demos.

Run by the daemon once per shard, with amazon-kclpy importable (installed, or its unpacked
sdist on PYTHONPATH):

    executableName = python3 multilang/samples/python/recording_processor.py

Behaviour:
  * process_records: appends the batch to the output file, then checkpoints at the last record
    of the batch;
  * shard_ended: checkpoints with no sequence number (SHARD_END);
  * shutdown_requested: checkpoints with no sequence number (everything delivered so far);
  * lease_lost: records the event (no checkpointer: the lease belongs to someone else now).

Environment:
  KCL_STREAM_NAME              set by kcl-multilang for every child: the name of the shard's
                               stream (amazon-kclpy passes only the keys it knows of the
                               initialize message on to initialize_input, so the daemon's
                               `streamName` key does not reach a Python processor).
  KCL_SAMPLE_OUTPUT            file to append to (nothing is written without it): one line per
                               record, `<shardId> <sequenceNumber> <base64 data>`, and event lines
                               starting with '#': `#initialize <shardId> <startingSeq> <pid>
                               <stream>`,
                               `#shard_ended <shardId>`, `#shutdown_requested <shardId>`,
                               `#lease_lost <shardId>`, `#checkpoint_error <shardId> <error>`,
                               `#crash <shardId> <pid>`, `#exit <shardId> <pid>` (stdin closed,
                               clean exit). A batch is appended with a single write, so the lines
                               of concurrent children never interleave.
  KCL_SAMPLE_CRASH_AFTER=<n>   misbehave once: the first child (of any shard) that has recorded
                               at least n records exits with status 1 right after recording a
                               batch and before checkpointing it. A marker file
                               (KCL_SAMPLE_CRASH_MARKER, default <output>.crashed) makes sure only
                               one child ever crashes, so its restarted successor does not.
  KCL_SAMPLE_BATCH_DELAY_MS=<ms>
                               sleep this long between recording a batch and checkpointing it
                               (slows consumption down so that tests can act mid-run).
  KCL_SAMPLE_SKIP_BATCH_CHECKPOINT=1
                               do not checkpoint after each batch (only at shard end and when a
                               shutdown is requested), to show what those checkpoints do.
  KCL_SAMPLE_WORKER=<id>       name the worker (no spaces) and time-stamp the output, so that
                               several daemons can share one output file (fleet tests). Adds,
                               only when set: `<id> <unixMs>` at the end of `#initialize`; a
                               line `#batch <shardId> <pid> <unixMs> <n>` written together with
                               (right before) the n record lines of each batch; `<pid> <unixMs>`
                               at the end of `#lease_lost`, `#shard_ended` and
                               `#shutdown_requested`; `<unixMs>` at the end of `#exit`.

stdout is the protocol channel: log to stderr only.
"""

import base64
import os
import sys
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

OUTPUT = os.environ.get("KCL_SAMPLE_OUTPUT") or None
CRASH_AFTER = int(os.environ.get("KCL_SAMPLE_CRASH_AFTER") or 0)
CRASH_MARKER = os.environ.get("KCL_SAMPLE_CRASH_MARKER") or (OUTPUT + ".crashed" if OUTPUT else None)
BATCH_DELAY = int(os.environ.get("KCL_SAMPLE_BATCH_DELAY_MS") or 0) / 1000.0
SKIP_BATCH_CHECKPOINT = os.environ.get("KCL_SAMPLE_SKIP_BATCH_CHECKPOINT") == "1"
WORKER = os.environ.get("KCL_SAMPLE_WORKER") or None
THROTTLE_RETRIES = 5


def append(lines):
    """Appends lines to the output file with one write (O_APPEND)."""
    if not OUTPUT or not lines:
        return
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    fd = os.open(OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    finally:
        os.close(fd)


def now_ms():
    return int(time.time() * 1000)


def stamp():
    """` <pid> <unixMs>` for event lines when KCL_SAMPLE_WORKER is set, else nothing."""
    return " {} {}".format(os.getpid(), now_ms()) if WORKER else ""


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def claim_crash():
    """True exactly once across all children sharing the marker file."""
    if not CRASH_MARKER:
        return False
    try:
        fd = os.open(CRASH_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class RecordingProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = "unknown-shard"
        self.recorded = 0

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        # The shard's stream: kcl-multilang names it in the environment of every child.
        self.stream = os.environ.get("KCL_STREAM_NAME", "-")
        log("[{}] initialize at {} on stream {}".format(self.shard_id, initialize_input.sequence_number, self.stream))
        line = "#initialize {} {} {} {}".format(self.shard_id, initialize_input.sequence_number, os.getpid(), self.stream)
        if WORKER:
            line += " {} {}".format(WORKER, now_ms())
        append([line])

    def checkpoint(self, checkpointer, sequence_number=None, sub_sequence_number=None):
        """Checkpoints, retrying throttling; True on success."""
        for attempt in range(THROTTLE_RETRIES):
            try:
                checkpointer.checkpoint(sequence_number, sub_sequence_number)
                return True
            except kcl.CheckpointError as e:
                if e.value == "ThrottlingException" and attempt + 1 < THROTTLE_RETRIES:
                    time.sleep(0.2)
                    continue
                log("[{}] checkpoint at {} failed: {}".format(self.shard_id, sequence_number, e.value))
                append(["#checkpoint_error {} {}".format(self.shard_id, e.value)])
                return False
        return False

    def process_records(self, process_records_input):
        records = process_records_input.records
        if not records:
            return
        lines = ["{} {} {}".format(self.shard_id, r.sequence_number, r.data) for r in records]
        if WORKER:
            lines.insert(0, "#batch {} {} {} {}".format(self.shard_id, os.getpid(), now_ms(), len(records)))
        append(lines)
        self.recorded += len(records)
        if CRASH_AFTER and self.recorded >= CRASH_AFTER and claim_crash():
            append(["#crash {} {}".format(self.shard_id, os.getpid())])
            log("[{}] KCL_SAMPLE_CRASH_AFTER={}: crashing on purpose".format(self.shard_id, CRASH_AFTER))
            os._exit(1)
        if BATCH_DELAY:
            time.sleep(BATCH_DELAY)
        if SKIP_BATCH_CHECKPOINT:
            return
        last = records[-1]
        self.checkpoint(process_records_input.checkpointer, last.sequence_number, last.sub_sequence_number)

    def lease_lost(self, lease_lost_input):
        log("[{}] lease lost".format(self.shard_id))
        append(["#lease_lost {}{}".format(self.shard_id, stamp())])

    def shard_ended(self, shard_ended_input):
        if self.checkpoint(shard_ended_input.checkpointer):
            log("[{}] shard ended".format(self.shard_id))
            append(["#shard_ended {}{}".format(self.shard_id, stamp())])

    def shutdown_requested(self, shutdown_requested_input):
        if self.checkpoint(shutdown_requested_input.checkpointer):
            log("[{}] shutdown requested; checkpointed".format(self.shard_id))
            append(["#shutdown_requested {}{}".format(self.shard_id, stamp())])


if __name__ == "__main__":
    recording = RecordingProcessor()
    kcl.KCLProcess(recording).run()
    # run() returns when the daemon closes stdin.
    append(["#exit {} {}{}".format(recording.shard_id, os.getpid(), " {}".format(now_ms()) if WORKER else "")])
