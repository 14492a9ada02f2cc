/*
 * A record processor for the kcl-multilang daemon, written against the public API of the
 * `aws-kcl` npm package (tested with aws-kcl 2.3.2; its `lib/` is the same as the git
 * repository's 3.1.1). The npm package ships no samples, so this is one.
 *
 * Run by the daemon once per shard (see properties/node-sample.properties):
 *
 *     executableName = node multilang/samples/node/sample_processor.js
 *
 * with `aws-kcl` resolvable by `require`, e.g. NODE_PATH=<dir>/node_modules after
 * `npm install --prefix <dir> aws-kcl@2.3.2`.
 *
 * What it does:
 *   - processRecords: handles each record, then checkpoints at the last record of the batch;
 *   - shardEnded: checkpoints with no sequence number (= SHARD_END), which the daemon requires
 *     before the shard's children may start;
 *   - shutdownRequested (the daemon is stopping gracefully): checkpoints what it has processed;
 *   - leaseLost: nothing to checkpoint (another worker owns the shard now).
 *
 * stdout is the protocol channel to the daemon: never console.log() here; log with
 * console.error() (stderr), which the daemon copies into its own log per shard.
 *
 * For tests and demos: if the environment variable KCL_SAMPLE_OUTPUT names a file, one line
 * per record is appended to it, `<shardId> <sequenceNumber> <base64 data>`, plus event lines
 * starting with `#` (`#initialize <shardId> <startingSequenceNumber> <pid> <stream>`,
 * `#shard_ended <shardId>`, `#shutdown_requested <shardId>`, `#lease_lost <shardId>`,
 * `#checkpoint_error <shardId> <error>`, `#exit <shardId> <pid>`). Each batch is appended with
 * one synchronous write, so lines of the children of different shards never interleave.
 */

'use strict';

const fs = require('fs');
const kcl = require('aws-kcl');

const OUTPUT = process.env.KCL_SAMPLE_OUTPUT || null;

let shardId = 'unknown-shard';

function record(lines) {
  if (OUTPUT && lines.length > 0) {
    fs.appendFileSync(OUTPUT, lines.map((l) => l + '\n').join(''));
  }
}

function log(message) {
  console.error(`[${shardId}] ${message}`);
}

const recordProcessor = {
  initialize: function (input, completeCallback) {
    shardId = input.shardId;
    // The shard's stream: kcl-multilang adds `streamName` to the initialize message (aws-kcl
    // passes it on; the Java daemon sends none). It also names it in the KCL_STREAM_NAME
    // environment variable of every child.
    const stream = input.streamName || '-';
    log(`initialize at ${input.sequenceNumber} on stream ${stream}`);
    record([`#initialize ${shardId} ${input.sequenceNumber} ${process.pid} ${stream}`]);
    completeCallback();
  },

  processRecords: function (input, completeCallback) {
    const records = (input && input.records) || [];
    if (records.length === 0) {
      completeCallback();
      return;
    }
    const lines = [];
    for (const r of records) {
      // `data` is base64; decode it to work with the payload.
      const payload = Buffer.from(r.data, 'base64');
      lines.push(`${shardId} ${r.sequenceNumber} ${r.data}`);
      if (!OUTPUT) {
        log(`record ${r.sequenceNumber} (partition key ${r.partitionKey}, ${payload.length} bytes)`);
      }
    }
    record(lines);
    const last = records[records.length - 1].sequenceNumber;
    input.checkpointer.checkpoint(last, function (err, sequenceNumber) {
      if (err) {
        // e.g. ThrottlingException, ShutdownException (the lease was lost meanwhile).
        log(`checkpoint at ${last} failed: ${err}`);
        record([`#checkpoint_error ${shardId} ${err}`]);
      }
      completeCallback();
    });
  },

  leaseLost: function (input, completeCallback) {
    log('lease lost');
    record([`#lease_lost ${shardId}`]);
    completeCallback();
  },

  shardEnded: function (input, completeCallback) {
    // No sequence number: checkpoint at SHARD_END.
    input.checkpointer.checkpoint(function (err) {
      if (err) {
        log(`shard end checkpoint failed: ${err}`);
        record([`#checkpoint_error ${shardId} ${err}`]);
      } else {
        log('shard ended');
        record([`#shard_ended ${shardId}`]);
      }
      completeCallback();
    });
  },

  shutdownRequested: function (input, completeCallback) {
    // No sequence number: checkpoint everything delivered so far.
    input.checkpointer.checkpoint(function (err) {
      if (err) {
        log(`shutdown checkpoint failed: ${err}`);
        record([`#checkpoint_error ${shardId} ${err}`]);
      } else {
        log('shutdown requested; checkpointed');
        record([`#shutdown_requested ${shardId}`]);
      }
      completeCallback();
    });
  },
};

// The daemon closes stdin after the last message; aws-kcl then lets the process end.
process.on('exit', function () {
  record([`#exit ${shardId} ${process.pid}`]);
});

kcl(recordProcessor).run();
