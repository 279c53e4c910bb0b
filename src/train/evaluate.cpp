#include "train/evaluate.h"

#include <vector>

namespace speedrun {

double evaluate(GPT& model, StepLoader& loader, int64_t steps, int64_t window, Comm& comm) {
  check(steps >= 1, "evaluate: no validation batch (raise --val-tokens)");
  const int64_t n = model.B() * model.T();
  check(loader.tokens_per_micro_batch() == n, "evaluate: the loader reads micro-batches of ",
        loader.tokens_per_micro_batch(), " tokens, the model ", model.B(), " x ", model.T());
  std::vector<int32_t> x(size_t(loader.tokens_per_step())), y(x.size());
  loader.reset();
  double sum = 0;
  for (int64_t s = 0; s < steps; ++s) {
    loader.next(x.data(), y.data());
    for (int64_t k = 0; k < loader.micro_batches(); ++k)
      model.eval_micro_batch(x.data() + k * n, y.data() + k * n, window);
    sum += model.take_mean_loss();
  }
  return comm.all_reduce(sum / double(steps), ReduceOp::Mean);
}

}  // namespace speedrun
