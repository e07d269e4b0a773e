// lease.h - one writer per replica, enforced by the store (issue 13).
//
// The lease is one small text object beside the replica's levels
// (s3://BUCKET/PREFIX/lease, file:///DIR/lease; format in s3-put(1), LEASE):
//
//   walsync-lease 1
//   epoch 3                         takeovers so far + 1
//   writer 9f0c...-fd01-2a3b4c       the holder's identity (writer_identity)
//   host db1                         its host name, pid and start time
//   pid 4242
//   start 2026-12-02T13:47:25.120Z
//   takeover 2 0000000000000041 2026-12-02T13:50:01.000Z db2 77aa...-fd01-99
//   takeover 3 ...                  the last 8 takeovers: epoch, the TXID the
//                                    chain switched writers at, time, host, writer
//
// A writer creates it when absent (If-None-Match: *, link(2)), resumes it
// when it holds it (If-Match: the ETag it read), and refuses when another
// writer holds it, unless told to take over (If-Match again, recording the
// takeover). Every data object is then stored with If-None-Match (never
// replacing) and, after it is stored and before it is acknowledged, the
// lease's ETag is compared with the one this writer wrote (Lease::check).
// The argument that this never forks the chain is at the top of lease.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ltx/store.h"

namespace ltx {

struct LeaseRecord {
  uint64_t epoch = 0;
  std::string writer, host;
  int64_t pid = 0, start_ms = 0;
  struct Takeover {
    uint64_t epoch = 0, txid = 0;  // the epoch it began; the chain's last TXID before it
    int64_t at_ms = 0;
    std::string host, writer;
  };
  std::vector<Takeover> history;  // oldest first, at most kLeaseHistory
  std::string format() const;
  // False if text is not a lease.
  static bool parse(const std::string& text, LeaseRecord* out);
  // "db1 (pid 4242, since 2026-12-02T13:47:25.120Z)".
  std::string holder() const;
  // The takeover that ended `epoch` (the first recorded after it), or null.
  const Takeover* ended(uint64_t epoch) const;
};
constexpr size_t kLeaseHistory = 8;

// This writer's identity: a random id kept in id_file (created on first
// use), then the device and inode of id_file, then `extra` (walsync watch:
// the database's device and inode). A copy of the state (another VM, a
// copied directory, a copied database) has another inode, so it is
// another writer; a restart of the same pipeline is the same one.
std::string writer_identity(const std::string& id_file, const std::string& extra = "");
// "fd01-2a3b4c" for path's device and inode.
std::string file_identity(const std::string& path);

struct LeaseOptions {
  std::string writer;       // writer_identity(); empty: anonymous (takes no lease)
  bool takeover = false;    // replace another writer's lease
  bool unfenced = false;    // accept a store without conditional writes
  std::string probe_cache;  // remembers the probe's verdict for this URL; empty: none
  // One line for the operator (writing unfenced); may be null.
  std::function<void(const std::string&)> warn;
};

class Lease {
 public:
  Lease(Store& store, const Location& loc, const LeaseOptions& o);
  std::string key() const { return key_; }
  // Probes the store (once per prefix: the verdict is cached; an anonymous
  // writer does not probe, see unsupported()), then
  // creates, resumes or takes over the lease. Throws Integrity naming the
  // holder when another writer holds it (and !takeover); a permanent
  // Runtime error when the store has no conditional writes (and
  // !unfenced). After a takeover, every file above the recorded TXID is
  // removed (the old writer's, stored around the takeover).
  void acquire();
  // Data objects are stored with If-None-Match (false: unfenced store).
  bool conditional() const { return conditional_; }
  // A conditional data PUT was answered 501 (an anonymous writer does not
  // probe): throws the refusal, or (unfenced) warns and turns conditional() off.
  void unsupported();
  // After a data object `key` (TXIDs min..max) is stored, before it is
  // acknowledged: returns if this writer still holds the lease. Otherwise
  // removes the object when the new holder does not continue from it and
  // throws Integrity naming the new holder.
  void check(const std::string& key, uint64_t min_txid);
  // One GET-class request: false if another writer took the lease since.
  bool still_held();
  // Throws Integrity naming the writer that took the lease over; removes
  // `key` (if given) when the new holder does not continue from it.
  [[noreturn]] void lost(const std::string& key = "", uint64_t min_txid = 0);
  // A data object could not be stored because `key` exists and is not
  // ours: throws Integrity naming the holder.
  [[noreturn]] void fenced(const std::string& key);
  bool held() const { return !etag_.empty(); }
  // Talk to the store through s from now on (walsync watch opens one per
  // run of a pipeline; the lease outlives them).
  void use(Store& s) { s_ = &s; }
  // Set by acquire() after a takeover: the TXID the chain switched at.
  bool took_over() const { return took_over_; }
  uint64_t takeover_txid() const { return takeover_txid_; }

 private:
  bool probe();
  bool read(LeaseRecord* rec, std::string* etag);
  std::string url() const;
  Store* s_;
  Location loc_;
  LeaseOptions o_;
  std::string key_;
  bool conditional_ = true;
  std::string etag_;  // of the lease we wrote; empty: none held
  uint64_t epoch_ = 0;
  bool took_over_ = false;
  uint64_t takeover_txid_ = 0;
};

}  // namespace ltx
