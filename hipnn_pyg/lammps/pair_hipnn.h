/* pair_style hipnn: a HIP-NN potential exported by hipnn_pyg (hipnn-export ...
   aoti_output=model.pt2) and run through libtorch's AOTInductor loader, no Python.

   This source file is distributed with hipnn_pyg under the BSD-3-Clause licence. A
   binary built from it and loaded into LAMMPS is a derivative work of LAMMPS and falls
   under LAMMPS's GPL-2.0 licence. */

#ifndef LMP_PAIR_HIPNN_H
#define LMP_PAIR_HIPNN_H

#include "pair.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace LAMMPS_NS {

class PairHIPNN : public Pair {
 public:
  PairHIPNN(class LAMMPS *);
  ~PairHIPNN() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  std::vector<int64_t> type_number;  // atomic number of each LAMMPS type (1-based)
  std::vector<int64_t> species;      // atomic numbers the model knows
  double cutoff = 0.0;
  int num_interactions = 0;
  bool float64 = true;
  void allocate();
  void load(const std::string &path);
};

}  // namespace LAMMPS_NS

#endif
