/* Curated declarations of lime 5.1.64's C API (lime/lime_ffi.h) for cffi's cdef.
 *
 * Written by hand for pylime: only what the binding calls. Enum values end in "..."
 * so the C compiler supplies them; tests/test_types.py checks pylime.types against them.
 */

typedef struct lime_manager_struct *lime_manager_t;
typedef struct lime_ffi_data_struct *lime_ffi_data_t;

enum LIME_FFI_ERROR {
    LIME_FFI_SUCCESS,
    LIME_FFI_INVALID_CURVE_ARGUMENT,
    LIME_FFI_INTERNAL_ERROR,
    LIME_FFI_OUTPUT_BUFFER_TOO_SMALL,
    LIME_FFI_USER_NOT_FOUND,
    ...
};

enum lime_ffi_CurveId {
    lime_ffi_CurveId_unset,
    lime_ffi_CurveId_c25519,
    lime_ffi_CurveId_c448,
    ...
};

enum lime_ffi_EncryptionPolicy {
    lime_ffi_EncryptionPolicy_DRMessage,
    lime_ffi_EncryptionPolicy_cipherMessage,
    lime_ffi_EncryptionPolicy_optimizeUploadSize,
    lime_ffi_EncryptionPolicy_optimizeGlobalBandwidth,
    ...
};

enum lime_ffi_PeerDeviceStatus {
    lime_ffi_PeerDeviceStatus_untrusted,
    lime_ffi_PeerDeviceStatus_trusted,
    lime_ffi_PeerDeviceStatus_unsafe,
    lime_ffi_PeerDeviceStatus_fail,
    lime_ffi_PeerDeviceStatus_unknown,
    ...
};

enum lime_ffi_CallbackReturn {
    lime_ffi_CallbackReturn_success,
    lime_ffi_CallbackReturn_fail,
    ...
};

typedef struct {
    char *deviceId;
    enum lime_ffi_PeerDeviceStatus peerStatus;
    uint8_t *DRmessage;
    size_t DRmessageSize;
} lime_ffi_RecipientData_t;

typedef void (*lime_ffi_Callback)(void *userData, const enum lime_ffi_CallbackReturn status,
                                  const char *message);
typedef void (*lime_ffi_X3DHServerPostData)(void *userData, lime_ffi_data_t limeData,
                                            const char *url, const char *from,
                                            const uint8_t *message, const size_t message_size);

int lime_ffi_processX3DHServerResponse(lime_ffi_data_t limeData, const int code,
                                       const uint8_t *response, const size_t response_size);
int lime_ffi_manager_init(lime_manager_t *const manager, const char *db,
                          const lime_ffi_X3DHServerPostData X3DH_post_data, void *userData);
int lime_ffi_manager_destroy(lime_manager_t manager);
int lime_ffi_create_user(lime_manager_t manager, const char *localDeviceId,
                         const char *x3dhServerUrl, const enum lime_ffi_CurveId curve,
                         const uint16_t OPkInitialBatchSize,
                         const lime_ffi_Callback callback, void *callbackUserData);
int lime_ffi_delete_user(lime_manager_t manager, const char *localDeviceId,
                         const lime_ffi_Callback callback, void *callbackUserData);
int lime_ffi_is_user(lime_manager_t manager, const char *localDeviceId);
int lime_ffi_encryptOutBuffersMaximumSize(const size_t plainMessageSize,
                                          const enum lime_ffi_CurveId curve,
                                          size_t *DRmessageSize, size_t *cipherMessageSize);
int lime_ffi_encrypt(lime_manager_t manager, const char *localDeviceId,
                     const char *recipientUserId, lime_ffi_RecipientData_t *const recipients,
                     const size_t recipientsSize,
                     const uint8_t *const plainMessage, const size_t plainMessageSize,
                     uint8_t *const cipherMessage, size_t *cipherMessageSize,
                     const lime_ffi_Callback callback, void *callbackUserData,
                     enum lime_ffi_EncryptionPolicy encryptionPolicy);
enum lime_ffi_PeerDeviceStatus lime_ffi_decrypt(lime_manager_t manager,
                     const char *localDeviceId, const char *recipientUserId,
                     const char *senderDeviceId,
                     const uint8_t *const DRmessage, const size_t DRmessageSize,
                     const uint8_t *const cipherMessage, const size_t cipherMessageSize,
                     uint8_t *const plainMessage, size_t *plainMessageSize);
int lime_ffi_get_selfIdentityKey(lime_manager_t manager, const char *localDeviceId,
                                 uint8_t *const Ik, size_t *IkSize);
int lime_ffi_set_peerDeviceStatus(lime_manager_t manager, const char *peerDeviceId,
                                  const uint8_t *const Ik, const size_t IkSize,
                                  enum lime_ffi_PeerDeviceStatus status);
enum lime_ffi_PeerDeviceStatus lime_ffi_get_peerDeviceStatus(lime_manager_t manager,
                                                              const char *peerDeviceId);
int lime_ffi_delete_peerDevice(lime_manager_t manager, const char *peerDeviceId);
int lime_ffi_stale_sessions(lime_manager_t manager, const char *localDeviceId,
                            const char *peerDeviceId);
int lime_ffi_update(lime_manager_t manager, const lime_ffi_Callback callback,
                    void *callbackUserData, uint16_t OPkServerLowLimit, uint16_t OPkBatchSize);
int lime_ffi_set_x3dhServerUrl(lime_manager_t manager, const char *localDeviceId,
                               const char *x3dhServerUrl);
int lime_ffi_get_x3dhServerUrl(lime_manager_t manager, const char *localDeviceId,
                               char *x3dhServerUrl, size_t *x3dhServerUrlSize);

/* The key-server trampoline, implemented in pylime/_callbacks.py. */
extern "Python" void _pylime_post(void *userData, lime_ffi_data_t limeData, const char *url,
                                  const char *from, const uint8_t *message,
                                  const size_t message_size);

/* An operation's status, written by build_ffi.py's C status sink (lime's lime_ffi_Callback):
 * no trip into Python when lime reports an operation's end. The first status counts. */
typedef struct {
    int done;
    int ok;
    char message[256];
} pylime_status_t;
void pylime_status_sink(void *userData, const enum lime_ffi_CallbackReturn status,
                        const char *message);

/* One encryption in one crossing: each recipient's slot readied (its id, status unknown,
 * DRmessage room), the cipher room set, the status record cleared, then lime_ffi_encrypt
 * with the status sink. Returns lime's code (0 or negative) while the status is pending,
 * PYLIME_ENCRYPTED or PYLIME_ENCRYPT_FAILED once lime reported it during the call. */
#define PYLIME_ENCRYPTED ...
#define PYLIME_ENCRYPT_FAILED ...
int pylime_encrypt(lime_manager_t manager, const char *localDeviceId,
                   const char *recipientUserId, lime_ffi_RecipientData_t *recipients,
                   char **recipientIds, size_t recipientsSize, size_t DRmessageRoom,
                   const uint8_t *plainMessage, size_t plainMessageSize,
                   uint8_t *cipherMessage, size_t *cipherMessageSize, size_t cipherMessageRoom,
                   pylime_status_t *status, enum lime_ffi_EncryptionPolicy encryptionPolicy);

/* lime_ffi_decrypt with the plaintext room passed by value. A message of an established
 * session whose DHs is a low-order key is refused with PYLIME_LOW_ORDER, lime not called;
 * X3DH init messages are checked in Python (pylime.keycheck). The low-order encodings are
 * registered once per curve from pylime.keycheck (pylime_set_low_order). */
#define PYLIME_LOW_ORDER ...
int pylime_set_low_order(int curve, const uint8_t *keys, size_t count);
int pylime_dhs_low_order(const uint8_t *message, size_t size);
int pylime_decrypt(lime_manager_t manager,
                   const char *localDeviceId, const char *recipientUserId,
                   const char *senderDeviceId,
                   const uint8_t *DRmessage, size_t DRmessageSize,
                   const uint8_t *cipherMessage, size_t cipherMessageSize,
                   uint8_t *plainMessage, size_t plainMessageRoom, size_t *plainMessageSize);

/* Wipe a buffer that held a plaintext (explicit_bzero). */
void pylime_wipe(char *buffer, size_t size);

/* lime logs through bctoolbox (to stdout by default). build_ffi.py's C shim formats each
 * record and hands it to this sink, which forwards it to Python's logging. */
extern "Python+C" void _pylime_log(const char *domain, int level, const char *message);
void pylime_route_logs(int level_mask);

/* 1 if path's file system keeps files in memory (tmpfs, ramfs), 0 if not, -1 on error. */
int pylime_in_memory_fs(const char *path);

/* Which lime: the version pkg-config reported at build time, and the file dladdr says is
 * loaded (liblime has no version call). */
const char *pylime_lime_version(void);
const char *pylime_lime_path(void);
