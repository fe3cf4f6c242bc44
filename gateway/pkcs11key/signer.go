//go:build cgo

package pkcs11key

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/farthing-iot/farthing/protocol"
)

// PKCS#11 3.0's EdDSA constants, which github.com/miekg/pkcs11 lacks.
const (
	ckkECEdwards            = 0x00000040 // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen  = 0x00001055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA                = 0x00001057 // CKM_EDDSA
	ed25519OIDDER           = "\x06\x03\x2b\x65\x70"
	ed25519PublicKeyOctetID = 0x04 // CKA_EC_POINT is DER: OCTET STRING of the 32 bytes
)

// Signer signs with an Ed25519 key that stays in a token. It is a
// protocol.Signer, safe for concurrent use: signatures are made one at a
// time on its one session.
type Signer struct {
	mu      sync.Mutex // guards the session
	ctx     *pkcs11.Ctx
	session pkcs11.SessionHandle
	priv    pkcs11.ObjectHandle
	pub     ed25519.PublicKey
	kid     [protocol.KeyIDLen]byte
}

// Open loads the module, logs in to the token with the PIN and finds the
// key pair by its label.
func Open(cfg Config) (*Signer, error) {
	ctx, session, err := login(cfg)
	if err != nil {
		return nil, err
	}
	s := &Signer{ctx: ctx, session: session}
	if s.priv, err = s.find(pkcs11.CKO_PRIVATE_KEY, cfg.Key); err == nil {
		s.pub, err = s.publicKey(cfg.Key)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.kid = protocol.KeyIDOf(protocol.AlgEdDSA, s.pub)
	return s, nil
}

// login opens a read-write session on the token labelled cfg.Token and
// logs in as its user.
func login(cfg Config) (*pkcs11.Ctx, pkcs11.SessionHandle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, 0, err
	}
	pin, err := cfg.pin()
	if err != nil {
		return nil, 0, err
	}
	ctx := pkcs11.New(cfg.Module)
	if ctx == nil {
		return nil, 0, fmt.Errorf("key_pkcs11: cannot load the module %s", cfg.Module)
	}
	if err := ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		return nil, 0, fmt.Errorf("key_pkcs11: %s: %w", cfg.Module, err)
	}
	fail := func(err error) (*pkcs11.Ctx, pkcs11.SessionHandle, error) {
		ctx.Finalize()
		ctx.Destroy()
		return nil, 0, err
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return fail(fmt.Errorf("key_pkcs11: %w", err))
	}
	for _, slot := range slots {
		ti, err := ctx.GetTokenInfo(slot)
		if err != nil || ti.Label != cfg.Token {
			continue
		}
		session, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return fail(fmt.Errorf("key_pkcs11: token %q: %w", cfg.Token, err))
		}
		if err := ctx.Login(session, pkcs11.CKU_USER, pin); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			ctx.CloseSession(session)
			return fail(fmt.Errorf("key_pkcs11: token %q: login: %w", cfg.Token, err))
		}
		return ctx, session, nil
	}
	return fail(fmt.Errorf("%w: no token labelled %q in %s", ErrNoKey, cfg.Token, cfg.Module))
}

// find returns the one object of class with label.
func (s *Signer) find(class uint, label string) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}
	if err := s.ctx.FindObjectsInit(s.session, tmpl); err != nil {
		return 0, fmt.Errorf("key_pkcs11: %w", err)
	}
	objs, _, err := s.ctx.FindObjects(s.session, 2)
	s.ctx.FindObjectsFinal(s.session)
	switch {
	case err != nil:
		return 0, fmt.Errorf("key_pkcs11: %w", err)
	case len(objs) != 1:
		return 0, fmt.Errorf("%w: %d objects labelled %q of class %d (want one)", ErrNoKey, len(objs), label, class)
	}
	return objs[0], nil
}

// publicKey reads the public key of the pair labelled label.
func (s *Signer) publicKey(label string) (ed25519.PublicKey, error) {
	pub, err := s.find(pkcs11.CKO_PUBLIC_KEY, label)
	if err != nil {
		return nil, err
	}
	attrs, err := s.ctx.GetAttributeValue(s.session, pub, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil || len(attrs) != 1 {
		return nil, fmt.Errorf("key_pkcs11: key %q's public point: %v", label, err)
	}
	p := attrs[0].Value
	if len(p) == 2+ed25519.PublicKeySize && p[0] == ed25519PublicKeyOctetID && p[1] == ed25519.PublicKeySize {
		p = p[2:] // DER-wrapped, as PKCS#11 3.0 says
	}
	if len(p) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key_pkcs11: key %q is not an Ed25519 key (its point is %d bytes)", label, len(p))
	}
	return ed25519.PublicKey(p), nil
}

// Algorithm is EdDSA.
func (s *Signer) Algorithm() protocol.Algorithm { return protocol.AlgEdDSA }

// KeyID is the key id of the public key.
func (s *Signer) KeyID() []byte { return s.kid[:] }

// Public is the key's public half.
func (s *Signer) Public() ed25519.PublicKey { return s.pub }

// Sign appends the token's Ed25519 signature of msg to dst.
func (s *Signer) Sign(dst, msg []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ctx.SignInit(s.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, s.priv); err != nil {
		return dst, fmt.Errorf("key_pkcs11: sign: %w", err)
	}
	sig, err := s.ctx.Sign(s.session, msg)
	if err != nil {
		return dst, fmt.Errorf("key_pkcs11: sign: %w", err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(s.pub, msg, sig) {
		return dst, errors.New("key_pkcs11: the token's signature does not verify with its public key")
	}
	return append(dst, sig...), nil
}

// Close logs out and unloads the module.
func (s *Signer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return nil
	}
	s.ctx.Logout(s.session)
	s.ctx.CloseSession(s.session)
	s.ctx.Finalize()
	s.ctx.Destroy()
	s.ctx = nil
	return nil
}

// Generate makes an Ed25519 key pair labelled cfg.Key in the token: the
// private key sensitive and not extractable, so it never leaves the
// token. It returns the public key.
func Generate(cfg Config) (ed25519.PublicKey, error) {
	ctx, session, err := login(cfg)
	if err != nil {
		return nil, err
	}
	s := &Signer{ctx: ctx, session: session}
	defer s.Close()
	if _, err := s.find(pkcs11.CKO_PRIVATE_KEY, cfg.Key); err == nil {
		return nil, fmt.Errorf("key_pkcs11: token %q holds a key labelled %q already", cfg.Token, cfg.Key)
	}
	pubTmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, []byte(ed25519OIDDER)), pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.Key),
	}
	privTmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.Key),
	}
	if _, _, err := ctx.GenerateKeyPair(session, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubTmpl, privTmpl); err != nil {
		return nil, fmt.Errorf("key_pkcs11: generate an Ed25519 key in token %q: %w", cfg.Token, err)
	}
	return s.publicKey(cfg.Key)
}
