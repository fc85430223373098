// SPDX-License-Identifier: MIT
pragma solidity 0.8.17;
import {ERC20} from '@openzeppelin/contracts/token/ERC20/ERC20.sol';

/**
 * @dev A misbehaving ERC-20 for tests: `transfer` returns false and moves nothing, while
 * `transferFrom` works. The NitroAdjudicator pulls deposits with `safeTransferFrom` but pays out
 * with an unchecked `transfer`, so payouts in this token are silently lost.
 */
contract FalseToken is ERC20 {
    /**
     * @param owner Receives the whole supply, 10^30 units (not msg.sender, so CREATE2 works).
     */
    constructor(address owner) ERC20('FalseToken', 'FALSE') {
        _mint(owner, 10**30);
    }

    /// @dev Refuses every transfer by returning false, without reverting.
    function transfer(address, uint256) public pure override returns (bool) {
        return false;
    }
}
