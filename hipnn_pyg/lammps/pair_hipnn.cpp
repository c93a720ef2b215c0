/* pair_style hipnn: a HIP-NN potential exported by hipnn_pyg, run in LAMMPS (units
   metal) through libtorch's AOTInductor loader, on one MPI rank or many.

     plugin load hipnn_lammps.so
     pair_style hipnn
     pair_coeff * * model.pt2 O H       # the element of each atom type

   Each rank passes its local and ghost atoms, and the pairs of LAMMPS's full neighbour
   list (ghost atoms' neighbours included) within the cutoff, to the exported program;
   the ghost shell is raised to (interactions x cutoff + skin), the receptive field of
   the local atoms' energies. The program sums the local atoms' energies only and
   returns forces on every atom; the ghosts' forces go back to their owners by LAMMPS's
   reverse communication (newton_pair on), so several ranks give what one rank does.
   The virial is sum_i x_i f_i over local and ghost atoms (virial_fdotr_compute), which
   for such a force field equals -dE/d(strain).

   This source file is distributed with hipnn_pyg under the BSD-3-Clause licence. A
   binary built from it and loaded into LAMMPS is a derivative work of LAMMPS and falls
   under LAMMPS's GPL-2.0 licence. */

#include "pair_hipnn.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/ATen.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

using namespace LAMMPS_NS;

#ifndef HIPNN_KERNEL_LIBRARY
#define HIPNN_KERNEL_LIBRARY ""
#endif

namespace {

const char *const kSymbols[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
constexpr int kNumSymbols = sizeof(kSymbols) / sizeof(kSymbols[0]);

int atomic_number(const std::string &symbol) {
  for (int z = 1; z < kNumSymbols; ++z)
    if (symbol == kSymbols[z]) return z;
  return -1;
}

std::string symbol_of(int64_t z) {
  return (z > 0 && z < kNumSymbols) ? kSymbols[z] : "Z=" + std::to_string(z);
}

std::vector<int64_t> split_numbers(const std::string &text) {
  std::vector<int64_t> out;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

PairHIPNN::PairHIPNN(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;  // neighbour lists of ghost atoms: the layers reach past one cutoff
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairHIPNN::~PairHIPNN()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairHIPNN::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) setflag[i][j] = 0;
}

void PairHIPNN::settings(int narg, char ** /*arg*/)
{
  if (narg != 0) error->all(FLERR, "pair_style hipnn takes no arguments (the model comes with pair_coeff)");
}

void PairHIPNN::load(const std::string &path)
{
  // The program calls hipnn_pyg's compiled operators: their library must be loaded
  // (registered with torch) before the package is.
  const char *from_env = std::getenv("HIPNN_KERNEL_LIBRARY");
  const std::string library = (from_env && *from_env) ? from_env : HIPNN_KERNEL_LIBRARY;
  if (!library.empty() && dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr)
    error->all(FLERR, "pair hipnn: cannot load hipnn_pyg's kernel library {}: {} (rebuild the "
                      "plugin with hipnn-lammps-build, or set HIPNN_KERNEL_LIBRARY)",
               library, dlerror());
  try {
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair hipnn: cannot load the AOTInductor package {}: {} (write one with "
                      "hipnn-export model_path=... output=model.pt2 aoti_output=...)",
               path, e.what());
  }
  auto metadata = loader->get_metadata();
  for (const char *key : {"species", "cutoff", "num_interactions", "dtype", "export_version"})
    if (metadata.find(key) == metadata.end())
      error->all(FLERR, "pair hipnn: {} is not a hipnn_pyg export (no '{}' in its metadata)",
                 path, key);
  if (metadata["export_version"] != "2")
    error->all(FLERR, "pair hipnn: {} has export version {}; this plugin reads version 2 "
                      "(export the model again)", path, metadata["export_version"]);
  species = split_numbers(metadata["species"]);
  cutoff = std::stod(metadata["cutoff"]);
  num_interactions = std::stoi(metadata["num_interactions"]);
  float64 = metadata["dtype"] == "float64";
}

void PairHIPNN::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR, "pair_coeff * * model.pt2 <element of each of the {} atom types>", ntypes);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair hipnn: pair_coeff must be '* * model.pt2 <elements>'");
  load(arg[2]);
  std::string known;
  for (int64_t z : species) known += (known.empty() ? "" : " ") + symbol_of(z);
  type_number.assign(ntypes + 1, 0);
  for (int t = 1; t <= ntypes; ++t) {
    const std::string symbol = arg[2 + t];
    const int z = atomic_number(symbol);
    if (z < 0)
      error->all(FLERR, "pair hipnn: '{}' (atom type {}) is not an element symbol", symbol, t);
    bool found = false;
    for (int64_t s : species) found = found || s == z;
    if (!found)
      error->all(FLERR, "pair hipnn: element {} (atom type {}) is not among the model's species: {}",
                 symbol, t, known);
    type_number[t] = z;
  }
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;
}

void PairHIPNN::init_style()
{
  if (!loader) error->all(FLERR, "pair hipnn: pair_coeff * * model.pt2 ... must come first");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair hipnn needs newton_pair on: ghost atoms' forces go back to "
                      "their owners");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair hipnn needs units metal (eV, Angstrom), got units {}",
               update->unit_style);
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  // Each interaction layer reaches one cutoff further: ghosts out to all of them.
  const double ghost = num_interactions * cutoff + neighbor->skin;
  if (comm->cutghostuser < ghost) {
    comm->cutghostuser = ghost;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair hipnn: ghost cutoff {:.4g} A ({} interactions x {:.4g} A "
                          "+ skin)\n", ghost, num_interactions, cutoff);
  }
}

double PairHIPNN::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

void PairHIPNN::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom) error->all(FLERR, "pair hipnn gives no per-atom virial (compute stress/atom)");

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int listed = list->inum + list->gnum;
  const double cutsq_model = cutoff * cutoff;

  std::vector<int64_t> numbers(nall), centres, neighbours;
  std::vector<double> positions(3 * static_cast<size_t>(nall));
  std::vector<uint8_t> local(nall, 0);
  for (int i = 0; i < nall; ++i) {
    numbers[i] = type_number[type[i]];
    for (int k = 0; k < 3; ++k) positions[3 * i + k] = x[i][k];
    local[i] = i < nlocal;
  }
  for (int ii = 0; ii < listed; ++ii) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutsq_model) {
        neighbours.push_back(j);
        centres.push_back(i);
      }
    }
  }
  const int64_t num_edges = static_cast<int64_t>(centres.size());
  std::vector<int64_t> pairs(2 * num_edges);
  std::copy(neighbours.begin(), neighbours.end(), pairs.begin());
  std::copy(centres.begin(), centres.end(), pairs.begin() + num_edges);

  const auto as_long = at::TensorOptions().dtype(at::kLong);
  const auto as_double = at::TensorOptions().dtype(at::kDouble);
  const auto precision = float64 ? at::kDouble : at::kFloat;
  std::vector<at::Tensor> inputs = {
      at::from_blob(numbers.data(), {nall}, as_long),
      at::from_blob(positions.data(), {nall, 3}, as_double).to(precision),
      at::from_blob(pairs.data(), {2, num_edges}, as_long),
      at::zeros({num_edges, 3}, at::TensorOptions().dtype(precision)),  // ghosts are images
      at::from_blob(local.data(), {nall}, at::TensorOptions().dtype(at::kBool)),
  };
  std::vector<at::Tensor> outputs;
  try {
    outputs = loader->run(inputs);  // energy, atom energies, forces, virial
  } catch (const std::exception &e) {
    error->one(FLERR, "pair hipnn: the model failed: {}", e.what());
  }
  const at::Tensor forces = outputs.at(2).to(at::kDouble).contiguous();
  const double *force = forces.data_ptr<double>();
  for (int i = 0; i < nall; ++i)
    for (int k = 0; k < 3; ++k) f[i][k] += force[3 * i + k];
  if (eflag_global) eng_vdwl += outputs.at(0).to(at::kDouble).item<double>();
  if (eflag_atom) {
    const at::Tensor energies = outputs.at(1).to(at::kDouble).contiguous();
    const double *energy = energies.data_ptr<double>();
    for (int i = 0; i < nlocal; ++i) eatom[i] += energy[i];
  }
  if (vflag_fdotr) {
    virial_fdotr_compute();
  } else if (vflag_global) {  // the program's own -sum r (x) dE/dr, in LAMMPS's order
    const at::Tensor w = outputs.at(3).to(at::kDouble).contiguous();
    const double *v = w.data_ptr<double>();
    virial[0] += v[0], virial[1] += v[4], virial[2] += v[8];
    virial[3] += v[1], virial[4] += v[2], virial[5] += v[5];
  }
}
