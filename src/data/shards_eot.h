// Whether token shards delimit their documents with the EOT a model is told to use. The
// EOT is not in a shard's header: a wrong --eot makes the attention mask cut documents at
// some ordinary token and never at the real delimiter, which trains without an error and
// shows only in the results. What the shards' folder recorded, or else how they begin,
// says which token it is.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace speedrun {

// The EOT the folder of `shard` was written with: its prepare.json (speedrun prepare) or
// synthetic.json (the synthetic corpus), with the manifest's path; nullopt when the
// folder has neither, or the manifest names none (a manifest that is not JSON names none:
// the shards themselves are checked where they are read).
struct RecordedEot {
  int64_t eot;
  std::string manifest;
};
std::optional<RecordedEot> recorded_eot(const std::string& shard);

// The first EOT recorded by the folders of `files` (recorded_eot), with its manifest.
std::optional<RecordedEot> recorded_eot_of(const std::vector<std::string>& files);

// Checks `files` (shards) against the EOT `eot`. A folder whose manifest records another
// EOT is an Error naming the manifest, both ids and fix(that id) (e.g. "give --eot 2047"),
// or with `refuse` false (a model that already trained with `eot`: it may go on with it)
// a warning saying so. Without a manifest, the first file must begin with `eot`, as every
// document-delimited shard stream does (speedrun prepare, the record's FineWeb shards):
// if it does not, a warning saying so, with fix(its first token). Returns the warning, or
// "".
std::string check_shards_eot(const std::vector<std::string>& files, int64_t eot,
                             const std::function<std::string(int64_t)>& fix, bool refuse = true);

}  // namespace speedrun
