#include "dist/local_comm.h"

#include <cstring>

namespace speedrun {

void LocalComm::all_gather(Tensor out, const Tensor& in) {
  check(out.dtype == in.dtype && out.numel() == in.numel(), "LocalComm::all_gather: out ",
        out.shape_str(), " must hold exactly in ", in.shape_str());
  if (out.data == in.data) return;
  if (be_) {
    be_->copy(out, in.view({in.numel()}).view({out.numel()}));
    return;
  }
  check(in.device == Device::CPU, "LocalComm::all_gather: a device buffer needs the backend: "
        "construct LocalComm with it");
  std::memcpy(out.data, in.data, in.bytes());
}

}  // namespace speedrun
