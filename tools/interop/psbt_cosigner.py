#!/usr/bin/env python3
"""A Bitcoin cosigner outside Strongroom, as Sparrow with a hardware wallet would act, written
with embit (an independent pure-Python implementation of BIP-32, BIP-174 and descriptors).
The cold PSBT interoperability test (crates/cold/tests/offline.rs) drives it:

  account    --xprv ROOT [--network N]
      The BIP-48 P2WSH multisig account key of ROOT, as a descriptor key expression
      ([fingerprint/48h/1h/0h/2h]tpub...): what a hardware wallet exports to join a wallet.
  descriptor --descriptor D [--count N] [--network N]
      Check D's BIP-380 checksum and print, as JSON, the addresses embit derives from it: one
      list per branch (receive, change for a <0;1> descriptor).
  sign       --psbt IN --descriptor D --xprv ROOT --pay ADDRESS:SAT --fee-max SAT --out OUT
             [--base64] [--network N]
      Read a PSBT (binary or base64), check it as a careful cosigner does (previous
      transactions match, every input and every other output is the wallet's own, one
      output pays exactly ADDRESS:SAT, the fee is at most SAT, the global xpubs name this
      key), sign every input with ROOT and write the PSBT. Prints what it saw as JSON; exits
      2 without writing if a check fails.
  tamper     --psbt IN --mode amount|extra-output --to ADDRESS --xprv ROOT --out OUT
             [--network N]
      As a malicious or broken cosigner: move 10,000 sat from the largest output to the
      smallest (two amounts change, the total does not), or add an output paying ADDRESS
      500,000 sat out of the largest; then sign that changed transaction and write it.

Only the standard library and embit; nothing touches the network.
"""

import argparse
import base64
import json
import sys

from embit import bip32, script
from embit.descriptor import Descriptor
from embit.descriptor.checksum import checksum
from embit.networks import NETWORKS
from embit.psbt import PSBT, OutputScope
from embit.transaction import TransactionOutput


def read_psbt(path):
    data = open(path, "rb").read()
    if data.startswith(b"psbt\xff"):
        return PSBT.parse(data), "binary"
    return PSBT.from_string(data.decode().strip()), "base64"


def write_psbt(psbt, path, as_base64=False):
    raw = psbt.serialize()
    with open(path, "wb") as f:
        f.write(base64.b64encode(raw) + b"\n" if as_base64 else raw)


def root_key(text):
    root = bip32.HDKey.from_string(text)
    if not root.is_private:
        raise SystemExit("--xprv must be a private key")
    return root


def account_path(network):
    coin = 0 if network == "main" else 1
    return "m/48h/%dh/0h/2h" % coin


def account_key(root, network):
    path = account_path(network)
    xpub = root.derive(path).to_public()
    net = NETWORKS[network]
    origin = root.my_fingerprint.hex() + path[1:]
    return "[%s]%s" % (origin, xpub.to_string(version=net["xpub"]))


def parse_descriptor(text):
    """The descriptor and whether its checksum (BIP-380) is present and right."""
    body, _, given = text.strip().partition("#")
    if given and given != checksum(body):
        raise SystemExit("descriptor checksum %s is wrong (expected %s)" % (given, checksum(body)))
    return Descriptor.from_string(body), bool(given)


def address(spk, network):
    return spk.address(NETWORKS[network])


def refuse(why):
    print(json.dumps({"refused": why}))
    sys.exit(2)


def cmd_account(a):
    print(account_key(root_key(a.xprv), a.network))


def cmd_descriptor(a):
    desc, has_checksum = parse_descriptor(a.descriptor)
    branches = []
    for b in range(desc.num_branches):
        branches.append(
            [address(desc.derive(i, branch_index=b).script_pubkey(), a.network) for i in range(a.count)]
        )
    keys = [str(k.origin) for k in desc.keys]
    print(json.dumps({"checksum": has_checksum, "keys": keys, "branches": branches}))


def cmd_sign(a):
    net = a.network
    desc, _ = parse_descriptor(a.descriptor)
    root = root_key(a.xprv)
    fp = root.my_fingerprint
    psbt, form = read_psbt(a.psbt)
    pay_addr, _, pay_sat = a.pay.rpartition(":")
    pay_sat = int(pay_sat)
    try:
        psbt.verify()  # each non_witness_utxo hashes to the outpoint's txid
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        refuse("previous transactions: %s" % e)

    inputs = []
    for n, inp in enumerate(psbt.inputs):
        if inp.witness_utxo is None:
            refuse("input %d has no witness UTXO" % n)
        full = inp.non_witness_utxo.vout[inp.vout]
        if full.value != inp.witness_utxo.value or full.script_pubkey != inp.witness_utxo.script_pubkey:
            refuse("input %d: witness UTXO differs from the previous transaction" % n)
        if not desc.owns(inp):
            refuse("input %d is not the wallet's" % n)
        mine = [d for d in inp.bip32_derivations.values() if d.fingerprint == fp]
        if len(mine) != 1:
            refuse("input %d names this key %d times" % (n, len(mine)))
        path = bip32.path_to_str(mine[0].derivation)
        idx, branch = desc.check_derivation(mine[0])
        want = desc.derive(idx, branch_index=branch).witness_script()
        if inp.witness_script is None or inp.witness_script.data != want.data:
            refuse("input %d: the witness script is not the wallet's" % n)
        inputs.append({"value": inp.witness_utxo.value, "path": path})

    outputs = []
    paid = False
    for n, out in enumerate(psbt.outputs):
        addr = address(out.script_pubkey, net)
        if not paid and addr == pay_addr and out.value == pay_sat:
            paid = True
            outputs.append({"address": addr, "value": out.value, "kind": "payment"})
            continue
        if not desc.owns(out):
            refuse("output %d pays %d sat to %s, which is neither the payment nor change" % (n, out.value, addr))
        ders = list(out.bip32_derivations.values())
        idx, branch = desc.check_derivation(ders[0])
        if branch != 1:
            refuse("output %d goes to a receive address, not change" % n)
        outputs.append({"address": addr, "value": out.value, "kind": "change", "index": idx})
    if not paid:
        refuse("no output pays %d sat to %s" % (pay_sat, pay_addr))
    fee = psbt.fee()
    if fee > a.fee_max:
        refuse("fee %d sat is above %d" % (fee, a.fee_max))

    # PSBT_GLOBAL_XPUB: the account key of this signer must be there, at its own path (a
    # hardware wallet checks the multisig's keys this way).
    mine = account_key(root, net)
    xpubs = []
    for xpub, der in psbt.xpubs.items():
        origin = der.fingerprint.hex() + bip32.path_to_str(der.derivation)[1:]
        xpubs.append("[%s]%s" % (origin, xpub.to_string(version=NETWORKS[net]["xpub"])))
    if mine not in xpubs:
        refuse("the PSBT's global xpubs do not include this key")

    signed = psbt.sign_with(root)
    if signed != len(psbt.inputs):
        refuse("signed %d of %d inputs" % (signed, len(psbt.inputs)))
    write_psbt(psbt, a.out, a.base64)
    print(
        json.dumps(
            {
                "read": form,
                "txid": psbt.tx.txid().hex(),
                "inputs": inputs,
                "outputs": outputs,
                "fee": fee,
                "xpubs": xpubs,
                "signed": signed,
            }
        )
    )


def cmd_tamper(a):
    psbt, _ = read_psbt(a.psbt)
    root = root_key(a.xprv)
    largest = max(psbt.outputs, key=lambda o: o.value)
    if a.mode == "amount":
        smallest = min(psbt.outputs, key=lambda o: o.value)
        smallest.value += 10_000
        largest.value -= 10_000
    elif a.mode == "extra-output":
        largest.value -= 500_000
        spk = script.address_to_scriptpubkey(a.to)
        psbt.outputs.append(OutputScope(vout=TransactionOutput(500_000, spk)))
    psbt.sign_with(root)
    write_psbt(psbt, a.out)
    print(json.dumps({"txid": psbt.tx.txid().hex()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="regtest", choices=sorted(NETWORKS))
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("account")
    s.add_argument("--xprv", required=True)
    s = sub.add_parser("descriptor")
    s.add_argument("--descriptor", required=True)
    s.add_argument("--count", type=int, default=3)
    s = sub.add_parser("sign")
    s.add_argument("--psbt", required=True)
    s.add_argument("--descriptor", required=True)
    s.add_argument("--xprv", required=True)
    s.add_argument("--pay", required=True)
    s.add_argument("--fee-max", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--base64", action="store_true")
    s = sub.add_parser("tamper")
    s.add_argument("--psbt", required=True)
    s.add_argument("--mode", required=True, choices=["amount", "extra-output"])
    s.add_argument("--to", required=True)
    s.add_argument("--xprv", required=True)
    s.add_argument("--out", required=True)
    a = p.parse_args()
    {"account": cmd_account, "descriptor": cmd_descriptor, "sign": cmd_sign, "tamper": cmd_tamper}[a.cmd](a)


if __name__ == "__main__":
    main()
