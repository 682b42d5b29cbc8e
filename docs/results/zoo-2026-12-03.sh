set -ex
A=/work/main/.venv/bin/actlake
D=/work/shared/data
date
[ -d vit-random ] || /work/main/.venv/bin/python make_models.py
$A extract --zoo zoo.yaml --data $D/net2brain78/stimuli --dtype float32 --out zoo78 --unit-size 26
date
$A extract --zoo zoo.yaml --data $D/kriegeskorte92/Kriegeskorte_Neuron2008_supplementalData.mat --image-field stimuli_92objs --dtype float32 --out zoo92 --unit-size 23
date
$A align rsa --data 'zoo78/*' --hooks '*' --brain $D/net2brain78/fmri_EVC_RDMs.npz $D/net2brain78/fmri_IT_RDMs.npz --noise-ceiling --out rsa78
date
$A align rsa --data "zoo92/*" --hooks "*" --brain $D/kriegeskorte92/92_brainRDMs.mat $D/kriegeskorte92/92_behavRDMs.mat --baselines $D/kriegeskorte92/92_modelRDMs.mat --noise-ceiling --out rsa92b
date
$A align cka --data 'zoo78/*' --hooks '*' --kernel linear --permutations 200 --out cka78
date
