// Validation, shared by the trainer and `speedrun eval` (SPEC.md "Validation"): the loader
// reset to the start of the validation shards, `steps` batches read as the training
// batches are (each rank its own sequences, in micro-batches of model.B()), the mean loss
// per token over the batches, averaged over the ranks. It uses the window it is given
// (the training step's).
#pragma once
#include <cstdint>

#include "data/step_loader.h"
#include "dist/comm.h"
#include "model/gpt.h"

namespace speedrun {

// loader: this rank's validation batches, micro-batches of model.B() sequences of model.T()
// tokens. Returns the same value on every rank.
double evaluate(GPT& model, StepLoader& loader, int64_t steps, int64_t window, Comm& comm);

}  // namespace speedrun
