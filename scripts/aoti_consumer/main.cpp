// A C++ consumer of an AOTInductor package of hipnn_pyg's EnergyForces, linked as an
// MD code would link it: libtorch only, no Python. Reads a structure and its pair list
// as text on stdin,
//   num_atoms num_edges
//   Z x y z            (num_atoms lines: atomic number, position in Å)
//   j i ox oy oz       (num_edges lines: neighbour, centre, Cartesian image offset in Å)
// and prints the energy (eV), then one line of forces (eV/Å) per atom, then the virial
// (eV, 3 lines). A program on hipnn_pyg's compiled operators needs their library
// (hipnn_pyg.nn.csrc.library_path()) loaded first: give it as a third argument.
//   main <package.pt2> <float32|float64> [kernel library] < structure.txt
// Built and checked against the Python model by scripts/aoti_consumer/run.py.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/ATen.h>

#include <dlfcn.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::cerr << "usage: " << argv[0]
              << " package.pt2 float32|float64 [kernel library] < structure.txt\n";
    return 2;
  }
  if (argc == 4 && dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "cannot load the kernel library " << argv[3] << ": " << dlerror() << "\n";
    return 2;
  }
  const std::string precision = argv[2];
  if (precision != "float32" && precision != "float64") {
    std::cerr << "precision must be float32 or float64, got " << precision << "\n";
    return 2;
  }
  const auto dtype = precision == "float32" ? at::kFloat : at::kDouble;
  int64_t num_atoms = 0, num_edges = 0;
  if (!(std::cin >> num_atoms >> num_edges) || num_atoms < 1 || num_edges < 0) {
    std::cerr << "bad header: expected 'num_atoms num_edges'\n";
    return 2;
  }
  std::vector<int64_t> numbers(num_atoms), pairs(2 * num_edges);
  std::vector<double> positions(3 * num_atoms), images(3 * num_edges);
  for (int64_t a = 0; a < num_atoms; ++a) {
    std::cin >> numbers[a] >> positions[3 * a] >> positions[3 * a + 1] >> positions[3 * a + 2];
  }
  for (int64_t e = 0; e < num_edges; ++e) {
    std::cin >> pairs[e] >> pairs[num_edges + e] >> images[3 * e] >> images[3 * e + 1] >>
        images[3 * e + 2];
  }
  if (!std::cin) {
    std::cerr << "truncated input: expected " << num_atoms << " atoms and " << num_edges
              << " pairs\n";
    return 2;
  }
  const auto as_long = at::TensorOptions().dtype(at::kLong);
  const auto as_double = at::TensorOptions().dtype(at::kDouble);
  std::vector<at::Tensor> inputs = {
      at::from_blob(numbers.data(), {num_atoms}, as_long).clone(),
      at::from_blob(positions.data(), {num_atoms, 3}, as_double).to(dtype),
      at::from_blob(pairs.data(), {2, num_edges}, as_long).clone(),
      at::from_blob(images.data(), {num_edges, 3}, as_double).to(dtype),
      at::ones({num_atoms}, at::TensorOptions().dtype(at::kBool)),  // every atom is local
  };
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  // energy, atom energies, forces, virial
  const std::vector<at::Tensor> outputs = loader.run(inputs);
  const auto energy = outputs.at(0).to(at::kDouble);
  const auto forces = outputs.at(2).to(at::kDouble).contiguous();
  std::printf("%.17g\n", energy.item<double>());
  const double* f = forces.data_ptr<double>();
  for (int64_t a = 0; a < num_atoms; ++a) {
    std::printf("%.17g %.17g %.17g\n", f[3 * a], f[3 * a + 1], f[3 * a + 2]);
  }
  const auto virial = outputs.at(3).to(at::kDouble).contiguous();
  const double* w = virial.data_ptr<double>();
  for (int row = 0; row < 3; ++row) {
    std::printf("%.17g %.17g %.17g\n", w[3 * row], w[3 * row + 1], w[3 * row + 2]);
  }
  return 0;
}
