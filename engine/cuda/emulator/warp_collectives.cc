// The warp collectives of the CUDA emulator (__shfl*_sync, __ballot_sync,
// __syncwarp): the lanes of the mask meet; the last to arrive checks that
// they all came to the same collective with the same mask, computes every
// lane's result by CUDA's definitions and releases them.

#include "engine/cuda/emulator/grid_run.h"

namespace skipserve::emu::internal {

// One function: a collective is one rendezvous (check the caller, wait for
// the lanes of the mask, check that they all came to the same collective,
// compute every lane's result, release them) whose steps share the warp's
// state and read best top to bottom.
uint64_t GridRun::Collective(WarpOp op, unsigned mask, uint64_t value, int arg,
                             int width, const Site& site) {
  ThreadState& me = *current_;
  const int lane = me.linear % 32;
  const int warp_index = me.linear / 32;
  WarpState& warp = warps_[warp_index];
  if ((mask >> lane & 1u) == 0) {
    Fault(Format("%s: the calling lane %d is not in its mask %s",
                 site.ToString().c_str(), lane, MaskString(mask).c_str()));
  }
  if (mask & ~warp.present) {
    Fault(
        Format("%s: mask %s names lanes %s that do not exist (a block of "
               "%zu threads)",
               site.ToString().c_str(), MaskString(mask).c_str(),
               MaskString(mask & ~warp.present).c_str(), threads_.size()));
  }
  if (mask & warp.exited) {
    Fault(Format("%s: mask %s names lanes %s that have exited",
                 site.ToString().c_str(), MaskString(mask).c_str(),
                 MaskString(mask & warp.exited).c_str()));
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    Fault(Format("%s: width %d is not a power of two up to 32",
                 site.ToString().c_str(), width));
  }
  me.op = op;
  me.mask = mask;
  me.value = value;
  me.arg = arg;
  me.width = width;
  me.site = site;
  warp.waiting |= 1u << lane;
  if ((warp.waiting & mask) != mask) {
    me.status = Status::kAtWarp;
    PassOn(me, /*exiting=*/false);
    return me.result;
  }

  // Every lane of the mask is here: they must all be at this collective,
  // with this mask, and no other waiting lane may expect one of them.
  for (unsigned w = warp.waiting; w != 0; w &= w - 1) {
    const int l = __builtin_ctz(w);
    const ThreadState& other = Lane(me, l);
    const bool member = mask >> l & 1u;
    if (member &&
        (other.op != op || other.mask != mask || !(other.site == site))) {
      Fault(
          Format("lanes %d and %d of warp %d meet at different warp "
                 "collectives: %s (mask %s) and %s (mask %s)",
                 lane, l, warp_index, site.ToString().c_str(),
                 MaskString(mask).c_str(), other.site.ToString().c_str(),
                 MaskString(other.mask).c_str()));
    }
    if (!member && (other.mask & mask) != 0) {
      Fault(Format(
          "lane %d waits at %s with mask %s while lanes %s complete "
          "%s without it",
          l, other.site.ToString().c_str(), MaskString(other.mask).c_str(),
          MaskString(mask).c_str(), site.ToString().c_str()));
    }
  }
  unsigned ballot = 0;
  if (op == WarpOp::kBallot) {
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const int l = __builtin_ctz(m);
      if (Lane(me, l).value != 0) ballot |= 1u << l;
    }
  }
  for (unsigned m = mask; m != 0; m &= m - 1) {
    const int l = __builtin_ctz(m);
    ThreadState& t = Lane(me, l);
    const int segment = l & ~(t.width - 1);
    int src = l;
    switch (op) {
      case WarpOp::kSync:
        t.result = 0;
        break;
      case WarpOp::kBallot:
        t.result = ballot;
        break;
      case WarpOp::kShflIdx:
        src = segment + (t.arg & (t.width - 1));
        break;
      case WarpOp::kShflUp:
        src = l - t.arg;
        if (t.arg < 0 || src < segment) src = l;
        break;
      case WarpOp::kShflDown:
        src = l + t.arg;
        if (t.arg < 0 || src >= segment + t.width) src = l;
        break;
      case WarpOp::kShflXor:
        src = l ^ t.arg;
        if (t.arg < 0 || t.arg > 31 || (src & ~(t.width - 1)) != segment) {
          src = l;
        }
        break;
    }
    if (op != WarpOp::kSync && op != WarpOp::kBallot) {
      if ((mask >> src & 1u) == 0) {
        Fault(Format("%s: lane %d reads lane %d, which is not in the mask %s",
                     site.ToString().c_str(), l, src,
                     MaskString(mask).c_str()));
      }
      t.result = Lane(me, src).value;
    }
    if (l != lane) {
      t.status = Status::kReady;
      MakeReady(t.linear);
    }
  }
  warp.waiting &= ~mask;
  return me.result;
}

}  // namespace skipserve::emu::internal
